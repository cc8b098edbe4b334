//! The ledger's state machine, sans-IO: it takes committed transactions and a read view of the
//! state and returns writes. It never reads a clock, a file, the network or RocksDB; the
//! runtime (`store.rs`) commits its writes together with `last_applied` in one `WriteBatch`.
//!
//! Tables: `Public` holds what every party may read in plaintext (operator key, admin nonce,
//! tariff); `Private` holds customers, meters, per-meter summaries (dedup ranges and settled
//! totals) and accounts (encrypted once the consortium issue adds encryption; the layout will not
//! change). Nothing here is kept per reading: a reading's settlement line lives in the history
//! (`history.rs`), so state, and snapshots, grow with meters, not readings.

use std::collections::BTreeMap;

pub use crate::registry::{meter, MeterRecord, METER_PREFIX};
use domain::codec::{DecodeError, Reader, Writer};
use domain::ids::{CustomerId, KeyId, MeterId, Sequence};
use domain::money::{decode_decimal, encode_decimal, Currency, UnitPrice};
use domain::settlement::{settle_flat, supports_rules_version};
use domain::tx::{AdminAction, ReadingBatch, SignedAdmin, Transaction, TxBody};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The two table families; each is its own RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Public,
    Private,
}

/// Read access to committed state.
/// `Sync`: a store applying entries may wait (a rotated secret) while it holds a view.
pub trait StateRead: Sync {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>>;
}

/// A state with nothing in it, under an [`Overlay`] in tests of the state machine's parts.
#[cfg(test)]
pub(crate) struct EmptyState;

#[cfg(test)]
impl StateRead for EmptyState {
    fn get(&self, _: Table, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// Writes produced by applying transactions, readable through [`Overlay`] before they commit.
#[derive(Debug, Default)]
pub struct WriteSet {
    pub puts: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
}

/// Committed state plus the writes of the entries applied so far in this batch.
pub struct Overlay<'a> {
    base: &'a dyn StateRead,
    pub writes: WriteSet,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn StateRead) -> Self {
        Self { base, writes: WriteSet::default() }
    }
    pub(crate) fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.writes.puts.insert((table, key), value);
    }
}

impl StateRead for Overlay<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.puts.get(&(table, key.to_vec())) {
            Some(value) => Some(value.clone()),
            None => self.base.get(table, key),
        }
    }
}

/// What applying one transaction did, returned to the client that proposed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResult {
    /// Per reading, in batch order (empty for other transactions).
    pub readings: Vec<ReadingResult>,
    /// For admin transactions: `None` if applied, else the reason it was refused.
    pub admin_refused: Option<String>,
}

/// The fate of one reading in a committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingResult {
    Accepted,
    /// The state machine's verdict on a sequence already settled, whatever its content: it keeps
    /// ranges, not digests. The node answering a client tells an exact duplicate from
    /// equivocation from its history (`Store::settled_digest`) before proposing.
    Duplicate,
    /// Same sequence, other signed bytes: found by the answering node from its history.
    Equivocation,
    UnknownMeter,
    UnknownKey,
    /// The key signs only later intervals (a rotation effective after this interval).
    KeyNotYetValid,
    /// The key was rotated out or revoked before this interval.
    KeyRetired,
    /// The batch's gateway is not (or no longer) registered; checked again on apply, as it may
    /// have been revoked between the leader's check and the commit.
    UnregisteredGateway,
    NoTariff,
    CurrencyMismatch,
    /// A bound meter's interval outside all its bindings (rules version 2): it waits.
    Unbound,
    /// More energy in one interval than any meter can measure (`ENERGY_PER_READING_WH_MAX`).
    Implausible,
    /// Its charge, or an account or meter total it adds to, is beyond the range of money.
    SettlementOverflow,
}

impl From<domain::keyring::KeyRefusal> for ReadingResult {
    fn from(refusal: domain::keyring::KeyRefusal) -> Self {
        match refusal {
            domain::keyring::KeyRefusal::UnknownKey => ReadingResult::UnknownKey,
            domain::keyring::KeyRefusal::NotYetValid(_) => ReadingResult::KeyNotYetValid,
            domain::keyring::KeyRefusal::Retired(_) => ReadingResult::KeyRetired,
        }
    }
}

/// The most energy one reading may carry: 1 GWh in one interval is beyond any metering point.
/// Refusing more keeps every account sum far from u64 overflow and the money math in range. The
/// gateway applies a tighter, configured maximum power; this is the ledger's own bound.
pub const ENERGY_PER_READING_WH_MAX: u64 = 1_000_000_000;

impl ReadingResult {
    /// Stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            ReadingResult::Accepted => "accepted",
            ReadingResult::Duplicate => "duplicate",
            ReadingResult::Equivocation => "equivocation",
            ReadingResult::UnknownMeter => "unknown_meter",
            ReadingResult::UnknownKey => "unknown_key",
            ReadingResult::KeyNotYetValid => "key_not_yet_valid",
            ReadingResult::KeyRetired => "key_retired",
            ReadingResult::UnregisteredGateway => "unregistered_gateway",
            ReadingResult::NoTariff => "no_tariff",
            ReadingResult::CurrencyMismatch => "currency_mismatch",
            ReadingResult::Unbound => "unbound",
            ReadingResult::Implausible => "implausible_energy",
            ReadingResult::SettlementOverflow => "settlement_overflow",
        }
    }
}

// ---- keys -------------------------------------------------------------------------------------

const KEY_OPERATOR: &[u8] = b"operator_key";
const KEY_ADMIN_NONCE: &[u8] = b"admin_nonce";
const KEY_PRICE: &[u8] = b"flat_price";

fn key_customer(customer: &CustomerId) -> Vec<u8> {
    [b"c/".as_slice(), customer.as_str().as_bytes()].concat()
}
fn key_ranges(meter: &MeterId, key_id: KeyId) -> Vec<u8> {
    let mut key = [b"d/".as_slice(), meter.as_str().as_bytes(), b"/"].concat();
    key.extend_from_slice(&key_id.0.to_be_bytes());
    key
}
/// Prefix of the per-(meter, key) summaries: `d/{meter}/{key id: 4 bytes}`.
const SUMMARY_PREFIX: &[u8] = b"d/";
fn key_account(account: &str) -> Vec<u8> {
    [b"a/".as_slice(), account.as_bytes()].concat()
}

fn key_transaction(tx_id: &domain::ids::TxId) -> Vec<u8> {
    [b"x/".as_slice(), tx_id.0.as_slice()].concat()
}

/// The log index at which a transaction was applied, if it was.
pub fn transaction_index(state: &dyn StateRead, tx_id: &domain::ids::TxId) -> Option<u64> {
    transaction_outcome(state, tx_id).map(|(index, _)| index)
}

/// Where a transaction was applied, and for an admin transaction the state refused, why.
pub fn transaction_outcome(state: &dyn StateRead, tx_id: &domain::ids::TxId) -> Option<(u64, Option<String>)> {
    state.get(Table::Public, &key_transaction(tx_id)).map(|bytes| {
        assert!(bytes.len() >= 8, "a transaction index holds at least its 8-byte log index");
        let (index, reason) = bytes.split_at(8);
        let index = u64::from_be_bytes(index.try_into().expect("split at 8 bytes"));
        let reason = (!reason.is_empty()).then(|| String::from_utf8_lossy(reason).into_owned());
        (index, reason)
    })
}

/// The customer's receivable account (debited by interval charges).
pub fn customer_account_name(customer: &CustomerId) -> String {
    format!("customer:{customer}")
}
/// The supplier's accrual account for a currency (credited by interval charges).
pub fn supplier_accrual_account_name(currency: Currency) -> String {
    format!("supplier-accrual:{currency}")
}

// ---- records ----------------------------------------------------------------------------------

/// A double-entry account: posted debits and credits at full precision, plus the energy behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub currency: Currency,
    pub debits_posted: Decimal,
    pub credits_posted: Decimal,
    pub energy_import_wh: u64,
    pub energy_export_wh: u64,
    pub transfers_count: u64,
}

impl Account {
    fn new(currency: Currency) -> Self {
        Account {
            currency,
            debits_posted: Decimal::ZERO,
            credits_posted: Decimal::ZERO,
            energy_import_wh: 0,
            energy_export_wh: 0,
            transfers_count: 0,
        }
    }
    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.fixed(self.currency.code().as_bytes());
        encode_decimal(&mut writer, self.debits_posted);
        encode_decimal(&mut writer, self.credits_posted);
        writer.u64(self.energy_import_wh).u64(self.energy_export_wh).u64(self.transfers_count);
        writer.finish()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let code: [u8; 3] = reader.array()?;
        let currency = Currency::new(std::str::from_utf8(&code).unwrap_or("???"))
            .map_err(|error| DecodeError::invalid("currency", error.to_string()))?;
        let account = Account {
            currency,
            debits_posted: decode_decimal(&mut reader, "debits_posted")?,
            credits_posted: decode_decimal(&mut reader, "credits_posted")?,
            energy_import_wh: reader.u64()?,
            energy_export_wh: reader.u64()?,
            transfers_count: reader.u64()?,
        };
        reader.finish()?;
        Ok(account)
    }
}

/// Sorted, disjoint, non-adjacent inclusive ranges of sequences seen for one (meter, key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceRanges(pub Vec<(u64, u64)>);

impl SequenceRanges {
    pub fn contains(&self, sequence: u64) -> bool {
        let index = self.0.partition_point(|&(_, end)| end < sequence);
        self.0.get(index).is_some_and(|&(start, _)| start <= sequence)
    }
    /// Adds one sequence, merging with neighbours.
    pub fn insert(&mut self, sequence: u64) {
        if self.contains(sequence) {
            return;
        }
        let index = self.0.partition_point(|&(_, end)| end < sequence);
        let joins_left = index > 0 && self.0[index - 1].1.checked_add(1) == Some(sequence);
        let joins_right = index < self.0.len() && sequence.checked_add(1) == Some(self.0[index].0);
        match (joins_left, joins_right) {
            (true, true) => {
                self.0[index - 1].1 = self.0[index].1;
                self.0.remove(index);
            }
            (true, false) => self.0[index - 1].1 = sequence,
            (false, true) => self.0[index].0 = sequence,
            (false, false) => self.0.insert(index, (sequence, sequence)),
        }
    }
    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(4 + 16 * self.0.len());
        writer.u32(self.0.len() as u32);
        for &(start, end) in &self.0 {
            writer.u64(start).u64(end);
        }
        writer.finish()
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let count = reader.u32()? as usize;
        if count > bytes.len() / 16 {
            return Err(DecodeError::invalid("ranges", "count exceeds bytes"));
        }
        let ranges = (0..count).map(|_| Ok((reader.u64()?, reader.u64()?))).collect::<Result<Vec<_>, DecodeError>>()?;
        reader.finish()?;
        Ok(SequenceRanges(ranges))
    }
}

/// What the state keeps of one (meter, key id): the sequences settled, as ranges, and the totals
/// of their settlement lines (the lines themselves are in the history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterSummary {
    pub ranges: SequenceRanges,
    pub readings_settled: u64,
    pub amount: Decimal,
    pub energy_import_wh: u64,
    pub energy_export_wh: u64,
}

impl MeterSummary {
    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.long_bytes(&self.ranges.encode()).u64(self.readings_settled);
        encode_decimal(&mut writer, self.amount);
        writer.u64(self.energy_import_wh).u64(self.energy_export_wh);
        writer.finish()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let summary = MeterSummary {
            ranges: SequenceRanges::decode(reader.long_bytes(bytes.len())?)?,
            readings_settled: reader.u64()?,
            amount: decode_decimal(&mut reader, "amount")?,
            energy_import_wh: reader.u64()?,
            energy_export_wh: reader.u64()?,
        };
        reader.finish()?;
        Ok(summary)
    }
}

/// The summary of a (meter, key id), if any of its readings was settled.
pub fn meter_summary(state: &dyn StateRead, meter_id: &MeterId, key_id: KeyId) -> Option<MeterSummary> {
    state.get(Table::Private, &key_ranges(meter_id, key_id)).map(|bytes| decode_or_crash(MeterSummary::decode(&bytes)))
}

/// Whether a reading's sequence was settled (the dedup ranges say so; the history has its line).
pub fn sequence_settled(state: &dyn StateRead, meter_id: &MeterId, key_id: KeyId, sequence: Sequence) -> bool {
    meter_summary(state, meter_id, key_id).is_some_and(|summary| summary.ranges.contains(sequence.0))
}

// ---- reads used by the API --------------------------------------------------------------------

/// A customer's currency, if the customer is registered.
pub fn customer_currency(state: &dyn StateRead, customer: &CustomerId) -> Option<Currency> {
    state.get(Table::Private, &key_customer(customer)).map(|bytes| {
        let code = std::str::from_utf8(&bytes).expect("currency stored as ASCII");
        Currency::new(code).expect("stored currency is supported")
    })
}

/// An account by name, if it has been created.
pub fn account(state: &dyn StateRead, name: &str) -> Option<Account> {
    state.get(Table::Private, &key_account(name)).map(|bytes| decode_or_crash(Account::decode(&bytes)))
}

/// The flat tariff, if set.
pub fn flat_price(state: &dyn StateRead) -> Option<UnitPrice> {
    state.get(Table::Public, KEY_PRICE).map(|bytes| {
        let mut reader = Reader::new(&bytes);
        let per_kwh = decode_or_crash(decode_decimal(&mut reader, "per_kwh"));
        let code: [u8; 3] = decode_or_crash(reader.array());
        let currency = Currency::new(std::str::from_utf8(&code).unwrap_or("???")).expect("stored currency");
        UnitPrice { per_kwh, currency }
    })
}

/// The highest admin nonce applied so far (0 before the first).
pub fn admin_nonce(state: &dyn StateRead) -> u64 {
    state
        .get(Table::Public, KEY_ADMIN_NONCE)
        .map_or(0, |bytes| u64::from_be_bytes(bytes.as_slice().try_into().expect("nonce stored as 8 bytes")))
}

/// Committed state that does not decode is a broken invariant: crash rather than replicate it.
pub(crate) fn decode_or_crash<T>(result: Result<T, DecodeError>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("committed state does not decode: {error}"),
    }
}

/// The books balance: every customer account's debits equal the settled totals of its meters,
/// and its transfer count their number of readings; each supplier accrual account's credits equal
/// all totals in its currency. `private` is the whole private table, `state` a view of the same
/// state. (The totals against the settlement lines in the history: `Store::check_settled_lines`.)
/// The simulation checks this after every step; `Err` names the first account that is off.
pub fn check_books(state: &dyn StateRead, private: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    // Per account name: (sum of lines, number of lines).
    let mut expected: BTreeMap<String, (Decimal, u64)> = BTreeMap::new();
    for (key, value) in private.iter().filter(|(key, _)| key.starts_with(SUMMARY_PREFIX)) {
        let meter_id = summary_meter(key)?;
        let record = meter(state, &meter_id).ok_or_else(|| format!("settled readings of unregistered {meter_id}"))?;
        let summary = MeterSummary::decode(value).map_err(|error| format!("summary of {meter_id}: {error}"))?;
        let currency = customer_currency(state, &record.customer_id)
            .ok_or_else(|| format!("{} has no currency", record.customer_id))?;
        for name in [customer_account_name(&record.customer_id), supplier_accrual_account_name(currency)] {
            let entry = expected.entry(name).or_insert((Decimal::ZERO, 0));
            entry.0 += summary.amount;
            entry.1 += summary.readings_settled;
        }
    }
    let mut seen = 0;
    for (key, value) in private.iter().filter(|(key, _)| key.starts_with(b"a/")) {
        let name = String::from_utf8_lossy(&key[2..]).into_owned();
        let account = Account::decode(value).map_err(|error| format!("account {name}: {error}"))?;
        let (sum, count) = expected.get(&name).copied().unwrap_or((Decimal::ZERO, 0));
        let posted = if name.starts_with("customer:") { account.debits_posted } else { account.credits_posted };
        if posted != sum || account.transfers_count != count {
            return Err(format!(
                "account {name}: posted {posted} in {} transfers, but its meters' settled totals are {sum} in {count}",
                account.transfers_count
            ));
        }
        seen += 1;
    }
    if seen != expected.len() {
        return Err(format!("{} accounts have settled readings, {seen} exist", expected.len()));
    }
    Ok(())
}

/// Every (meter, key id) summary in the private table: `private` as for [`check_books`].
pub fn summaries(private: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<(MeterId, KeyId, MeterSummary)>, String> {
    private
        .iter()
        .filter(|(key, _)| key.starts_with(SUMMARY_PREFIX))
        .map(|(key, value)| {
            let meter_id = summary_meter(key)?;
            let key_id = KeyId(u32::from_be_bytes(key[key.len() - 4..].try_into().expect("4 bytes")));
            let summary = MeterSummary::decode(value).map_err(|error| format!("summary of {meter_id}: {error}"))?;
            Ok((meter_id, key_id, summary))
        })
        .collect()
}

/// The meter of a summary key `d/{meter}/{key id: 4 bytes}`.
fn summary_meter(key: &[u8]) -> Result<MeterId, String> {
    let meter_bytes = key.get(2..key.len().saturating_sub(5)).ok_or("summary key too short")?;
    std::str::from_utf8(meter_bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("summary key {key:?} names no meter"))
}

// ---- apply ------------------------------------------------------------------------------------

/// What applying one transaction produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub result: TxResult,
    /// The claims document bound into the transaction's Merkle leaf (readings: one settlement
    /// line per reading; `docs/receipts.md`).
    pub claims: Option<Vec<u8>>,
}

/// A committed entry this node must not apply: the cluster disagrees with it, so it stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {log_index}: {reason}")]
pub struct Halt {
    pub log_index: u64,
    pub reason: String,
}

/// Applies one committed transaction at `log_index`. After applying a signature marker, the
/// caller records the Merkle root over entries `0..=log_index` with [`record_marker_root`].
pub fn apply(state: &mut Overlay<'_>, log_index: u64, tx: &Transaction) -> Result<Applied, Halt> {
    assert!(
        supports_rules_version(tx.rules_version),
        "entry {log_index} needs rules version {}, which this build cannot execute",
        tx.rules_version
    );
    // Where each transaction landed, so any node can answer "is my transaction committed?".
    state.put(Table::Public, key_transaction(&tx.tx_id), log_index.to_be_bytes().to_vec());
    Ok(match &tx.body {
        TxBody::Admin(admin) => {
            let refused = apply_admin(state, admin).err();
            refusal_recorded(state, log_index, tx, refused)
        }
        TxBody::Readings(batch) => {
            let (readings, claims) = apply_readings(state, batch, tx.rules_version);
            Applied { result: TxResult { readings, admin_refused: None }, claims: Some(claims) }
        }
        TxBody::Tick => {
            if tx.rules_version >= 2 {
                crate::settle::close_due(state, domain::ids::UnixSeconds(tx.time.0.div_euclid(1_000)));
            }
            Applied::default()
        }
        TxBody::SignatureMarker => {
            state.put(Table::Public, KEY_PENDING_MARKER.to_vec(), log_index.to_be_bytes().to_vec());
            Applied::default()
        }
        TxBody::Gov(gov) => {
            let now = domain::ids::UnixSeconds(tx.time.0.div_euclid(1_000));
            let refused = crate::governance::apply(state, log_index, now, gov).err();
            refusal_recorded(state, log_index, tx, refused)
        }
        TxBody::IssueInvoice { customer, period_start } => {
            match crate::invoices::issue(state, log_index, tx, customer, *period_start) {
                Ok(document) => Applied { result: TxResult::default(), claims: Some(document) },
                Err(reason) => refusal_recorded(state, log_index, tx, Some(reason)),
            }
        }
        TxBody::IssueCreditNote { customer, order } => {
            match crate::credit_notes::issue(state, log_index, tx, customer, *order) {
                Ok(document) => Applied { result: TxResult::default(), claims: Some(document) },
                Err(reason) => refusal_recorded(state, log_index, tx, Some(reason)),
            }
        }
        TxBody::RotateSecret { version, .. } => {
            // The store adopts the new secret into the node's ring once this accepts it.
            let refused = crate::rotation::apply(state, *version).err();
            refusal_recorded(state, log_index, tx, refused)
        }
        TxBody::Signature(signature) => Applied {
            result: TxResult {
                readings: Vec::new(),
                admin_refused: apply_signature(state, log_index, signature, tx.time)?,
            },
            claims: None,
        },
    })
}

/// An admin or governance transaction's result; a refusal is kept with its position, so a retry
/// of the same signed bytes hears the refusal again, not "applied".
fn refusal_recorded(state: &mut Overlay<'_>, log_index: u64, tx: &Transaction, refused: Option<String>) -> Applied {
    if let Some(reason) = &refused {
        let mut value = log_index.to_be_bytes().to_vec();
        value.extend_from_slice(reason.as_bytes());
        state.put(Table::Public, key_transaction(&tx.tx_id), value);
    }
    Applied { result: TxResult { readings: Vec::new(), admin_refused: refused }, claims: None }
}

const KEY_PENDING_MARKER: &[u8] = b"pending_marker";
const KEY_LAST_SIGNED: &[u8] = b"last_signed";
const KEY_SERVICE_KEY: &[u8] = b"service_key";
/// Prefix of signature records, keyed by big-endian marker index.
pub const SIGNATURE_PREFIX: &[u8] = b"s/";

pub fn key_signature(marker_index: u64) -> Vec<u8> {
    [SIGNATURE_PREFIX, &marker_index.to_be_bytes()].concat()
}
pub(crate) fn key_endorsement(node_id: u64, node_key: &[u8; 32]) -> Vec<u8> {
    [b"n/".as_slice(), &node_id.to_be_bytes(), node_key].concat()
}

/// A committed signature over the root at a marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRecord {
    pub signature: domain::tx::RootSignature,
    /// Where the signature transaction itself sits.
    pub log_index: u64,
}

impl SignatureRecord {
    fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        let signature = &self.signature;
        writer
            .u64(signature.marker_index)
            .fixed(&signature.root)
            .u64(signature.node_id)
            .fixed(&signature.node_key)
            .fixed(&signature.signature)
            .u64(self.log_index);
        // Signatures that name their time append it (older records end at the log index).
        if let Some(at) = signature.signed_at {
            writer.i64(at);
        }
        writer.finish()
    }
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let record = SignatureRecord {
            signature: domain::tx::RootSignature {
                marker_index: reader.u64()?,
                root: reader.array()?,
                node_id: reader.u64()?,
                node_key: reader.array()?,
                signature: reader.array()?,
                signed_at: None,
            },
            log_index: reader.u64()?,
        };
        let mut record = record;
        if reader.remaining() > 0 {
            record.signature.signed_at = Some(reader.i64()?);
        }
        reader.finish()?;
        Ok(record)
    }
}

/// The marker waiting for its signature, if any.
pub fn pending_marker(state: &dyn StateRead) -> Option<u64> {
    pending_marker_root(state).map(|(marker, _)| marker)
}

/// The pending marker and the Merkle root this node computed at it (once recorded).
fn pending_marker_root(state: &dyn StateRead) -> Option<(u64, Option<[u8; 32]>)> {
    let bytes = state.get(Table::Public, KEY_PENDING_MARKER)?;
    let marker = u64::from_be_bytes(bytes.get(..8)?.try_into().expect("8 bytes"));
    Some((marker, bytes.get(8..40).map(|root| root.try_into().expect("32 bytes"))))
}

/// Records the Merkle root over entries `0..=marker_index`, computed when the marker was applied,
/// so the signature step can check it even on a node that later installs a snapshot.
pub fn record_marker_root(state: &mut Overlay<'_>, marker_index: u64, root: [u8; 32]) {
    if pending_marker(state) == Some(marker_index) {
        state.put(Table::Public, KEY_PENDING_MARKER.to_vec(), [marker_index.to_be_bytes().as_slice(), &root].concat());
    }
}

/// The last signature: (marker index it covers, log index of the signature transaction).
pub fn last_signed(state: &dyn StateRead) -> Option<(u64, u64)> {
    state.get(Table::Public, KEY_LAST_SIGNED).map(|bytes| {
        let mut reader = Reader::new(&bytes);
        (decode_or_crash(reader.u64()), decode_or_crash(reader.u64()))
    })
}

/// The pinned service key, if any node was endorsed.
pub fn service_key(state: &dyn StateRead) -> Option<[u8; 32]> {
    state.get(Table::Public, KEY_SERVICE_KEY).map(|bytes| bytes.as_slice().try_into().expect("32 bytes"))
}

/// Step four of a signature: check the leader's root against this node's own, then record it.
/// A wrong root or a bad signature halts the node; a signature for a marker that is no longer
/// pending (two leaders signed it) is refused and changes nothing.
fn apply_signature(
    state: &mut Overlay<'_>,
    log_index: u64,
    signature: &domain::tx::RootSignature,
    time: domain::ids::UnixMillis,
) -> Result<Option<String>, Halt> {
    if signature.signed_at.is_some_and(|at| at != time.0) {
        return Ok(Some(format!(
            "signature_time_mismatch: the root names {:?}, its transaction {}",
            signature.signed_at, time.0
        )));
    }
    let pending = pending_marker_root(state).filter(|(marker, _)| *marker == signature.marker_index);
    let Some((_, own)) = pending else {
        return Ok(Some(format!("stale_signature: marker {} is not pending", signature.marker_index)));
    };
    let halt = |reason: String| Halt { log_index, reason };
    let own = own.ok_or_else(|| halt(format!("no Merkle root recorded at marker {}", signature.marker_index)))?;
    if own != signature.root {
        return Err(halt(format!(
            "the leader signed root {} at marker {}, this node computed {}",
            hex::encode(signature.root),
            signature.marker_index,
            hex::encode(own)
        )));
    }
    signature.verify().map_err(|error| halt(format!("root signature does not verify: {error}")))?;
    let record = SignatureRecord { signature: signature.clone(), log_index };
    state.put(Table::Public, key_signature(signature.marker_index), record.encode());
    let mut last = Writer::new();
    last.u64(signature.marker_index).u64(log_index);
    state.put(Table::Public, KEY_LAST_SIGNED.to_vec(), last.finish());
    state.put(Table::Public, KEY_PENDING_MARKER.to_vec(), Vec::new());
    Ok(None)
}

fn apply_admin(state: &mut Overlay<'_>, admin: &SignedAdmin) -> Result<(), String> {
    admin.verify().map_err(|error| format!("bad_operator_signature: {error}"))?;
    match state.get(Table::Public, KEY_OPERATOR) {
        // The first admin transaction pins the operator key (genesis).
        None => state.put(Table::Public, KEY_OPERATOR.to_vec(), admin.operator_key.to_vec()),
        Some(operator) if operator == admin.operator_key => {}
        Some(_) => return Err("not_operator: signed by a key other than the ledger's operator key".into()),
    }
    let last_nonce = admin_nonce(state);
    if admin.nonce <= last_nonce {
        return Err(format!("stale_nonce: {} is not above {last_nonce}", admin.nonce));
    }
    if crate::governance::is_governed(state) {
        return Err("governed: the consortium governs this ledger; propose the change (wattle gov propose)".into());
    }
    execute_action(state, &admin.action)?;
    state.put(Table::Public, KEY_ADMIN_NONCE.to_vec(), admin.nonce.to_be_bytes().to_vec());
    Ok(())
}

/// Carries out one configuration action, whoever decided it: the operator before governance
/// starts, an accepted proposal after (`governance.rs`). `Err` is the reason it is refused.
pub(crate) fn execute_action(state: &mut Overlay<'_>, action: &AdminAction) -> Result<(), String> {
    if let Some(outcome) = crate::registry::execute(state, action) {
        return outcome;
    }
    match action {
        AdminAction::RegisterCustomer { customer_id, currency } => {
            if let Some(existing) = customer_currency(state, customer_id) {
                if existing != *currency {
                    return Err(format!("customer_currency_fixed: {customer_id} bills in {existing}"));
                }
            }
            state.put(Table::Private, key_customer(customer_id), currency.code().as_bytes().to_vec());
        }
        AdminAction::SetFlatPrice(price) => {
            price.validate().map_err(|error| error.to_string())?;
            let mut writer = Writer::new();
            encode_decimal(&mut writer, price.per_kwh);
            writer.fixed(price.currency.code().as_bytes());
            state.put(Table::Public, KEY_PRICE.to_vec(), writer.finish());
        }
        // Membership changes are recorded here (signed, on the ledger's record); the leader
        // carries them out through openraft once this transaction is committed.
        AdminAction::AddNode { address, .. } => {
            if address.is_empty() || address.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("bad_address: {address:?} is not HOST:PORT"));
            }
        }
        AdminAction::SetVoters { voters } => {
            if voters.is_empty() {
                return Err("no_voters: a cluster needs at least one voter".into());
            }
        }
        AdminAction::EndorseNode { node_id, node_key, service_key: endorsing_key, endorsement, validity } => {
            match service_key(state) {
                // The first endorsement pins the service key.
                None => state.put(Table::Public, KEY_SERVICE_KEY.to_vec(), endorsing_key.to_vec()),
                Some(pinned) if pinned == *endorsing_key => {}
                Some(_) => return Err("not_service_key: endorsed by a key other than the pinned service key".into()),
            }
            let endorsement = crate::endorsements::NodeEndorsement { signature: *endorsement, validity: *validity };
            crate::endorsements::record(state, *node_id, node_key, endorsing_key, endorsement)?;
        }
        AdminAction::PublishTariff { tariff_json } => crate::tariffs::publish(state, tariff_json)?,
        AdminAction::Bind { binding_json } => crate::settle::bind(state, binding_json)?,
        AdminAction::PublishPrices { prices_json } => crate::settle::publish_prices(state, prices_json)?,
        AdminAction::StartGovernance { genesis_json } => crate::governance::start(state, genesis_json)?,
        AdminAction::AddMember { member_json } => crate::governance::add_member(state, member_json)?,
        AdminAction::RemoveMember { member_id } => crate::governance::remove_member(state, member_id)?,
        AdminAction::SetConstitution { constitution_json } => {
            crate::governance::set_constitution(state, constitution_json)?
        }
        AdminAction::CreditInvoice { order_json } => crate::credit_notes::order(state, order_json)?,
        AdminAction::RotateLedgerSecret => crate::rotation::request(state),
        AdminAction::RegisterMeter { .. }
        | AdminAction::RegisterAttestedMeter { .. }
        | AdminAction::RotateMeterKey { .. }
        | AdminAction::RevokeMeterKey { .. }
        | AdminAction::RegisterGateway { .. }
        | AdminAction::RevokeGateway { .. }
        | AdminAction::RevokeNode { .. }
        | AdminAction::AcceptMeasurement { .. }
        | AdminAction::RevokeMeasurement { .. }
        | AdminAction::RegisterReader { .. }
        | AdminAction::RevokeReader { .. } => {
            unreachable!("registry actions are carried out by registry::execute")
        }
    }
    Ok(())
}

/// First line of a readings transaction's claims document of rules version 1 and 2: one line
/// per reading.
pub const CLAIMS_HEADER_V1: &str = "wattle.claims.v1";
/// First line of a readings transaction's claims document from rules version
/// [`CLAIMS_V2_RULES_VERSION`]: each reading line followed by the intervals it settled and their
/// priced lines.
pub const CLAIMS_HEADER_V2: &str = "wattle.claims.v2";
/// The first rules version whose readings transactions carry claims v2. Older entries keep
/// producing v1, byte for byte, so replaying an old log gives its stored leaves.
pub const CLAIMS_V2_RULES_VERSION: u32 = 3;

/// The reading lines of a readings transaction's claims document of either version, one per
/// reading in batch order (v2's indented interval and component lines left out); `None` if the
/// text starts with neither header.
pub fn claims_reading_lines(text: &str) -> Option<impl Iterator<Item = &str>> {
    let mut lines = text.lines();
    match lines.next() {
        Some(CLAIMS_HEADER_V1 | CLAIMS_HEADER_V2) => Some(lines.filter(|line| !line.starts_with(' '))),
        _ => None,
    }
}

/// Settles a batch; returns each reading's fate and the claims document (`docs/receipts.md`,
/// "The claims document"): a header line, then per reading `meter key_id sequence result amount
/// currency` (amount and currency `-` unless accepted), each line ending in `\n`. From rules
/// version 3 (v2) an accepted reading settled by bindings is followed by its intervals and their
/// component lines ([`write_claimed_interval`]). The history keeps each accepted reading's
/// settlement line from it (`history::settled_lines`).
fn apply_readings(state: &mut Overlay<'_>, batch: &ReadingBatch, rules_version: u32) -> (Vec<ReadingResult>, Vec<u8>) {
    use std::fmt::Write as _;
    let v2 = rules_version >= CLAIMS_V2_RULES_VERSION;
    let mut claims = format!("{}\n", if v2 { CLAIMS_HEADER_V2 } else { CLAIMS_HEADER_V1 });
    let mut results = Vec::with_capacity(batch.readings.len());
    let gateway_admitted = !matches!(
        crate::registry::gateway_standing(state, &batch.gateway_id),
        crate::registry::GatewayStanding::Unregistered | crate::registry::GatewayStanding::Revoked
    );
    for item in &batch.readings {
        let outcome = if gateway_admitted {
            apply_reading(state, &item.reading, rules_version)
        } else {
            Err(ReadingResult::UnregisteredGateway)
        };
        let reading = item.reading.reading();
        let result = outcome.as_ref().map_or_else(|result| *result, |_| ReadingResult::Accepted);
        let _ = write!(claims, "{} {} {} {} ", reading.meter_id, reading.key_id.0, reading.sequence.0, result.code());
        match outcome {
            Ok(settled) => {
                let _ = writeln!(claims, "{} {}", settled.amount, settled.currency);
                if v2 {
                    for interval in &settled.intervals {
                        write_claimed_interval(&mut claims, interval);
                    }
                }
            }
            Err(_) => claims.push_str("- -\n"),
        }
        results.push(result);
    }
    (results, claims.into_bytes())
}

/// One interval of a v2 claims document: the interval line, then one line per priced component
/// of the reading's part, in pricing order (energy, network, levies, export):
///
/// ```text
///   interval {start} period {period_start} {open|closed} tariff {tariff}@{tariff_from} import_wh {n} export_wh {n} quality {quality} flags {flags|-}
///     {component} {unit} {quantity} {unit_price} {party} {amount}
/// ```
///
/// `party` is the line's other party and `amount` what it charges the customer (negative: a
/// credit), so the component amounts sum to the reading's amount.
fn write_claimed_interval(claims: &mut String, interval: &crate::settle::ClaimedInterval) {
    use std::fmt::Write as _;
    let flags: Vec<&str> = interval.flags.iter().map(|flag| flag_code(*flag)).collect();
    let _ = writeln!(
        claims,
        "  interval {} period {} {} tariff {}@{} import_wh {} export_wh {} quality {} flags {}",
        interval.start.0,
        interval.period_start.0,
        if interval.period_closed { "closed" } else { "open" },
        interval.tariff,
        interval.tariff_from.format("%Y-%m-%dT%H:%M:%S"),
        interval.import_wh,
        interval.export_wh,
        quality_code(interval.quality),
        if flags.is_empty() { "-".to_string() } else { flags.join(",") },
    );
    for line in &interval.lines {
        let party = if line.debtor == interval.customer { &line.creditor } else { &line.debtor };
        let _ = writeln!(
            claims,
            "    {} {} {} {} {} {}",
            line.component.key(),
            unit_code(line.unit),
            line.quantity,
            line.unit_price,
            party,
            line.customer_charge(&interval.customer),
        );
    }
}

// The words of a v2 claims document, written out here rather than taken from serde: these are
// hashed bytes (a receipt binds them), so a renamed variant must not change them unnoticed.

fn quality_code(quality: domain::settle::Quality) -> &'static str {
    use domain::settle::Quality;
    match quality {
        Quality::Actual => "actual",
        Quality::Estimated => "estimated",
        Quality::Corrected => "corrected",
        Quality::GatewayAttested => "gateway_attested",
    }
}

fn unit_code(unit: domain::tariff::Unit) -> &'static str {
    use domain::tariff::Unit;
    match unit {
        Unit::Kwh => "kwh",
        Unit::Kw => "kw",
        Unit::Day => "day",
        Unit::Money => "money",
    }
}

fn flag_code(flag: domain::tariff::Flag) -> &'static str {
    use domain::tariff::Flag;
    match flag {
        Flag::DynamicPriceFallback => "dynamic_price_fallback",
        Flag::Split => "split",
        Flag::Outage => "outage",
        Flag::CounterReset => "counter_reset",
        Flag::Partial => "partial",
    }
}

/// What an accepted reading settled: its charge, and the intervals settled by bindings (none at
/// the flat price).
struct Settled {
    amount: Decimal,
    currency: Currency,
    intervals: Vec<crate::settle::ClaimedInterval>,
}

/// One reading: its charge if settled, else why not. Writes nothing unless it settles.
/// Rules version 2 settles a meter with bindings by them (`settle.rs`); a meter without any
/// binding, and every reading of a version 1 entry, settles at the flat price.
fn apply_reading(
    state: &mut Overlay<'_>,
    verified: &domain::verify::VerifiedReading,
    rules_version: u32,
) -> Result<Settled, ReadingResult> {
    let reading = verified.reading();
    let Some(meter_record) = meter(state, &reading.meter_id) else {
        return Err(ReadingResult::UnknownMeter);
    };
    if let Err(refusal) = meter_record.keys.key_for(reading.key_id, reading.interval_start) {
        return Err(ReadingResult::from(refusal));
    }
    let summary_key = key_ranges(&reading.meter_id, reading.key_id);
    let mut summary = state
        .get(Table::Private, &summary_key)
        .map(|bytes| decode_or_crash(MeterSummary::decode(&bytes)))
        .unwrap_or_default();
    // Only the ranges decide: the digest of the settled reading is in the history, which a node
    // that joined from a snapshot may not hold yet, so reading it here would split replicas.
    if summary.ranges.contains(reading.sequence.0) && !crate::danger::dedup_off() {
        return Err(ReadingResult::Duplicate);
    }
    if reading.import_energy().0 > ENERGY_PER_READING_WH_MAX || reading.export_energy().0 > ENERGY_PER_READING_WH_MAX {
        return Err(ReadingResult::Implausible);
    }
    let overflow = ReadingResult::SettlementOverflow;
    let bindings = if rules_version >= 2 { crate::settle::bindings_of(state, &reading.meter_id) } else { Vec::new() };
    let (amount, currency, intervals) = if bindings.is_empty() {
        let Some(price) = flat_price(state) else {
            return Err(ReadingResult::NoTariff);
        };
        let currency = customer_currency(state, &meter_record.customer_id).expect("a meter's customer is registered");
        if currency != price.currency {
            return Err(ReadingResult::CurrencyMismatch);
        }
        (settle_flat(verified, &price).map_err(|_| overflow)?.amount.amount, currency, Vec::new())
    } else {
        let bindings = domain::settle::Bindings::from_list(bindings).expect("committed bindings do not overlap");
        // Checks every sum before writing; on `Err` it wrote nothing.
        let mut trial = Overlay::new(&*state);
        let charge = crate::settle::settle_reading(&mut trial, verified, &bindings)?;
        let writes = trial.writes.puts;
        state.writes.puts.extend(writes);
        (charge.amount, charge.currency, charge.intervals)
    };
    let (import_wh, export_wh) = (reading.import_energy().0, reading.export_energy().0);
    // Every sum first, checked; nothing is written unless all of them fit.
    summary.readings_settled = summary.readings_settled.checked_add(1).ok_or(overflow)?;
    summary.amount = summary.amount.checked_add(amount).ok_or(overflow)?;
    summary.energy_import_wh = summary.energy_import_wh.checked_add(import_wh).ok_or(overflow)?;
    summary.energy_export_wh = summary.energy_export_wh.checked_add(export_wh).ok_or(overflow)?;
    summary.ranges.insert(reading.sequence.0);
    // One transfer: debit the customer, credit the supplier's accrual account (the customer's
    // interval charges so far, net of export credits under rules version 2).
    let debit_name = customer_account_name(&meter_record.customer_id);
    let credit_name = supplier_accrual_account_name(currency);
    let post = |account: Option<Account>, debit: bool| -> Option<Account> {
        let mut account = account.unwrap_or_else(|| Account::new(currency));
        if debit {
            account.debits_posted = account.debits_posted.checked_add(amount)?;
        } else {
            account.credits_posted = account.credits_posted.checked_add(amount)?;
        }
        account.energy_import_wh = account.energy_import_wh.checked_add(import_wh)?;
        account.energy_export_wh = account.energy_export_wh.checked_add(export_wh)?;
        account.transfers_count = account.transfers_count.checked_add(1)?;
        Some(account)
    };
    let debit = post(account(state, &debit_name), true).ok_or(overflow)?;
    let credit = post(account(state, &credit_name), false).ok_or(overflow)?;
    state.put(Table::Private, summary_key, summary.encode());
    state.put(Table::Private, key_account(&debit_name), debit.encode());
    state.put(Table::Private, key_account(&credit_name), credit.encode());
    Ok(Settled { amount, currency, intervals })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::ids::{GatewayId, TxId, UnixMillis, UnixSeconds};
    use domain::reading::Reading;
    use domain::tx::BatchReading;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use std::str::FromStr;
    use std::sync::Mutex;

    /// Committed state in memory: the same state machine runs on it as on RocksDB.
    #[derive(Default)]
    struct Memory(Mutex<WriteSet>);
    impl StateRead for Memory {
        fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
            self.0.lock().expect("one test thread").puts.get(&(table, key.to_vec())).cloned()
        }
    }
    impl Memory {
        fn apply(&self, index: u64, body: TxBody) -> TxResult {
            let tx =
                Transaction { tx_id: TxId([index as u8; 16]), rules_version: 1, time: UnixMillis(index as i64), body };
            let mut overlay = Overlay::new(self);
            let result = apply(&mut overlay, index, &tx).expect("no halt").result;
            let writes = overlay.writes.puts;
            self.0.lock().expect("one test thread").puts.extend(writes);
            result
        }
    }

    fn reading(sequence: u64, import_wh: u64) -> Reading {
        let meter = MeterId::new("M1").expect("id");
        Reading::import_interval(
            meter,
            KeyId(1),
            Sequence(sequence),
            UnixSeconds(900 * sequence as i64),
            1_000,
            import_wh,
        )
    }

    fn batch(meter_key: &SigningKey, readings: &[Reading]) -> TxBody {
        let public = meter_key.verifying_key().to_bytes();
        let items = readings.iter().map(|r| (r.sign(meter_key).expect("valid"), public)).collect();
        let verified = domain::verify::verify_batch(items, &mut rand::thread_rng());
        TxBody::Readings(ReadingBatch {
            gateway_id: GatewayId::new("gw").expect("id"),
            readings: verified
                .into_iter()
                .map(|v| BatchReading { reading: v.expect("valid"), backfill: false })
                .collect(),
        })
    }

    fn configured() -> (Memory, SigningKey, SigningKey) {
        let memory = Memory::default();
        let operator = SigningKey::from_bytes(&[1; 32]);
        let meter_key = SigningKey::from_bytes(&[2; 32]);
        let eur = Currency::new("EUR").expect("EUR");
        let customer = CustomerId::new("C1").expect("id");
        let actions = [
            AdminAction::RegisterCustomer { customer_id: customer.clone(), currency: eur },
            AdminAction::RegisterMeter {
                meter_id: MeterId::new("M1").expect("id"),
                key_id: KeyId(1),
                public_key: meter_key.verifying_key().to_bytes(),
                customer_id: customer,
            },
            AdminAction::SetFlatPrice(UnitPrice { per_kwh: Decimal::from_str("0.30").expect("price"), currency: eur }),
        ];
        for (nonce, action) in actions.into_iter().enumerate() {
            let result =
                memory.apply(nonce as u64 + 1, TxBody::Admin(SignedAdmin::sign(nonce as u64 + 1, action, &operator)));
            assert_eq!(result.admin_refused, None);
        }
        (memory, operator, meter_key)
    }

    #[test]
    fn a_settled_sequence_is_never_settled_again() {
        let (memory, _, meter_key) = configured();
        let result = memory.apply(10, batch(&meter_key, &[reading(1, 500), reading(2, 250)]));
        assert_eq!(result.readings, vec![ReadingResult::Accepted, ReadingResult::Accepted]);
        // The same reading again, in another transaction: nothing changes.
        let result = memory.apply(11, batch(&meter_key, &[reading(1, 500)]));
        assert_eq!(result.readings, vec![ReadingResult::Duplicate]);
        // Same sequence, different bytes: not settled either. The state keeps ranges, not
        // digests; the answering node tells equivocation from its history (store tests).
        let result = memory.apply(12, batch(&meter_key, &[reading(2, 999)]));
        assert_eq!(result.readings, vec![ReadingResult::Duplicate]);
        let summary = meter_summary(&memory, &MeterId::new("M1").expect("id"), KeyId(1)).expect("summary");
        assert_eq!(summary.ranges, SequenceRanges(vec![(1, 2)]));
        assert_eq!((summary.readings_settled, summary.energy_import_wh), (2, 750));
        assert_eq!(summary.amount, Decimal::from_str("0.225").expect("amount"));
        let customer = account(&memory, "customer:C1").expect("account");
        let supplier = account(&memory, "supplier-accrual:EUR").expect("account");
        assert_eq!(customer.energy_import_wh, 750);
        assert_eq!(customer.debits_posted, Decimal::from_str("0.225").expect("amount"));
        assert_eq!(customer.debits_posted, supplier.credits_posted, "debits equal credits");
        assert_eq!(customer.transfers_count, 2);
    }

    #[test]
    fn implausible_energy_is_refused_and_not_marked_seen() {
        let (memory, _, meter_key) = configured();
        let huge = reading(1, ENERGY_PER_READING_WH_MAX + 1);
        assert_eq!(memory.apply(10, batch(&meter_key, &[huge])).readings, vec![ReadingResult::Implausible]);
        assert!(account(&memory, "customer:C1").is_none(), "nothing was settled");
        // The sequence stays free: the meter's real reading for it is still accepted.
        assert_eq!(memory.apply(11, batch(&meter_key, &[reading(1, 500)])).readings, vec![ReadingResult::Accepted]);
    }

    #[test]
    fn admin_transactions_need_the_operator_key_and_a_fresh_nonce() {
        let (memory, operator, _) = configured();
        let eur = Currency::new("EUR").expect("EUR");
        let price = AdminAction::SetFlatPrice(UnitPrice { per_kwh: Decimal::ONE, currency: eur });
        let replay = memory.apply(20, TxBody::Admin(SignedAdmin::sign(2, price.clone(), &operator)));
        assert!(replay.admin_refused.expect("refused").starts_with("stale_nonce"));
        let intruder = SigningKey::from_bytes(&[3; 32]);
        let foreign = memory.apply(21, TxBody::Admin(SignedAdmin::sign(99, price, &intruder)));
        assert!(foreign.admin_refused.expect("refused").starts_with("not_operator"));
        assert_eq!(flat_price(&memory).expect("price").per_kwh, Decimal::from_str("0.30").expect("price"));
        // A retry of the refused bytes (same transaction id) learns the refusal, not "applied".
        let reason =
            transaction_outcome(&memory, &TxId([20; 16])).and_then(|(index, reason)| reason.map(|r| (index, r)));
        assert!(reason.is_some_and(|(index, reason)| index == 20 && reason.starts_with("stale_nonce")));
        assert_eq!(transaction_outcome(&memory, &TxId([1; 16])), Some((1, None)), "an applied one");
    }

    /// Finding 5 of issue 12: a price out of range is refused with a reason when the admin
    /// action is applied, and the tariff stays as it was.
    #[test]
    fn out_of_range_prices_are_refused_with_a_reason() {
        let (memory, operator, meter_key) = configured();
        let eur = Currency::new("EUR").expect("EUR");
        let cases = [
            ("100000000000000000000", "price_too_large"),
            ("-0.30", "price_negative"),
            ("0.0000000001", "price_too_precise"),
        ];
        for (offset, (per_kwh, code)) in cases.into_iter().enumerate() {
            let action = AdminAction::SetFlatPrice(UnitPrice {
                per_kwh: Decimal::from_str(per_kwh).expect("price"),
                currency: eur,
            });
            let result = memory.apply(20 + offset as u64, TxBody::Admin(SignedAdmin::sign(4, action, &operator)));
            let refused = result.admin_refused.unwrap_or_default();
            assert!(refused.starts_with(code), "price {per_kwh}: refused with {refused:?}, not {code}");
        }
        assert_eq!(flat_price(&memory).expect("price").per_kwh, Decimal::from_str("0.30").expect("price"));
        assert_eq!(memory.apply(30, batch(&meter_key, &[reading(1, 500)])).readings, vec![ReadingResult::Accepted]);
    }

    /// Plants committed state directly, as an older ledger (before prices were validated) left it.
    fn plant(memory: &Memory, table: Table, key: &[u8], value: Vec<u8>) {
        memory.0.lock().expect("one test thread").puts.insert((table, key.to_vec()), value);
    }

    /// Finding 5 of issue 12: a reading whose settlement overflows is refused with a reason, not a
    /// panic, and nothing of it is written: its sequence stays free for a correct price.
    #[test]
    fn a_settlement_that_overflows_is_refused_and_writes_nothing() {
        let (memory, _, meter_key) = configured();
        let eur = Currency::new("EUR").expect("EUR");
        let mut price = Writer::new();
        encode_decimal(&mut price, Decimal::MAX);
        price.fixed(eur.code().as_bytes());
        plant(&memory, Table::Public, KEY_PRICE, price.finish());
        // 2 kWh at the largest decimal.
        let result = memory.apply(10, batch(&meter_key, &[reading(1, 2_000)]));
        assert_eq!(result.readings.iter().map(|r| r.code()).collect::<Vec<_>>(), vec!["settlement_overflow"]);
        assert!(account(&memory, "customer:C1").is_none(), "nothing was settled");
        let mut price = Writer::new();
        encode_decimal(&mut price, Decimal::from_str("0.30").expect("price"));
        price.fixed(eur.code().as_bytes());
        plant(&memory, Table::Public, KEY_PRICE, price.finish());
        assert_eq!(memory.apply(11, batch(&meter_key, &[reading(1, 500)])).readings, vec![ReadingResult::Accepted]);
    }

    /// Finding 5 of issue 12: an account sum that would overflow refuses the reading, and neither
    /// account changes.
    #[test]
    fn an_account_sum_that_overflows_is_refused_and_writes_nothing() {
        let (memory, _, meter_key) = configured();
        let eur = Currency::new("EUR").expect("EUR");
        let mut full = Account::new(eur);
        full.debits_posted = Decimal::MAX;
        full.transfers_count = 1;
        plant(&memory, Table::Private, &key_account("customer:C1"), full.encode());
        // 10 kWh at 0.30: 3.0 more than the largest decimal holds.
        let result = memory.apply(10, batch(&meter_key, &[reading(1, 10_000)]));
        assert_eq!(result.readings.iter().map(|r| r.code()).collect::<Vec<_>>(), vec!["settlement_overflow"]);
        assert_eq!(account(&memory, "customer:C1"), Some(full), "the customer's account is unchanged");
        assert!(account(&memory, "supplier-accrual:EUR").is_none(), "the supplier's account is untouched");
    }

    proptest! {
        #[test]
        fn ranges_match_a_set(sequences in proptest::collection::vec(0u64..200, 0..300)) {
            let mut ranges = SequenceRanges::default();
            let mut set = std::collections::BTreeSet::new();
            for sequence in sequences {
                ranges.insert(sequence);
                set.insert(sequence);
            }
            for probe in 0..201 {
                prop_assert_eq!(ranges.contains(probe), set.contains(&probe));
            }
            for window in ranges.0.windows(2) {
                prop_assert!(window[0].1 + 1 < window[1].0, "ranges stay disjoint and non-adjacent");
            }
            prop_assert_eq!(SequenceRanges::decode(&ranges.encode()).expect("decodes"), ranges);
        }
    }
}
