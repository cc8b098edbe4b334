//! Bindings: which customer a meter's intervals belong to, under which tariff, from a local
//! date-time until another (move-in, move-out, meter exchange). An interval outside every
//! binding is not lost: the lookup says why, and the ledger keeps it waiting with that reason.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::ids::{MeterId, PartyId, TariffId, UnixSeconds};
use crate::tariff::calendar::utc_of_local;
use crate::tariff::{IntervalEnergy, Overflow, TimeZone};

/// A meter bound to a customer's supply point over `[from, to)` in local time of `time_zone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub meter: MeterId,
    pub customer: PartyId,
    /// The supply point (German MaLo, UK MPAN): stays when the meter is exchanged.
    pub supply_point: String,
    pub tariff: TariffId,
    /// Day of the month (1–28) the customer's billing periods start.
    pub billing_day: u32,
    pub time_zone: TimeZone,
    pub from: NaiveDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NaiveDateTime>,
}

impl Binding {
    /// The bytes a `Bind` admin transaction carries: serde_json of the struct (fields in
    /// declaration order, no floats), so every node records the same bytes.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a binding serialises")
    }

    /// Decodes [`Self::to_canonical_json`]; refuses other encodings of the same binding and a
    /// binding whose billing day or local times are invalid.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<Binding, BindingError> {
        let binding: Binding =
            serde_json::from_slice(bytes).map_err(|error| BindingError::Document(error.to_string()))?;
        if binding.to_canonical_json() != bytes {
            return Err(BindingError::Document("not canonical JSON (field order, spacing or form differs)".into()));
        }
        if !(1..=28).contains(&binding.billing_day) {
            return Err(BindingError::BillingDay(binding.billing_day));
        }
        let (from, to) = binding.utc_range().ok_or_else(|| BindingError::OutOfRange(binding.meter.clone()))?;
        if to.is_some_and(|to| to <= from) {
            return Err(BindingError::Empty(binding.meter.clone()));
        }
        Ok(binding)
    }

    /// The UTC half-open range of the binding (`None` end: open).
    pub fn utc_range(&self) -> Option<(UnixSeconds, Option<UnixSeconds>)> {
        let zone = self.time_zone.tz();
        let from = utc_of_local(zone, self.from)?;
        let to = match self.to {
            Some(to) => Some(utc_of_local(zone, to)?),
            None => None,
        };
        Some((from, to))
    }
    fn covers(&self, at: UnixSeconds) -> bool {
        self.utc_range().is_some_and(|(from, to)| from <= at && to.is_none_or(|to| at < to))
    }
}

/// Why an interval has no binding (it waits; it is not dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbound {
    #[error("meter_unbound: meter {0} has no binding")]
    NoBinding(MeterId),
    #[error("interval_unbound: meter {meter} has no binding covering {start}")]
    OutsideBindings { meter: MeterId, start: i64 },
}

/// Why a binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("binding_empty: a binding of meter {0} ends before it starts")]
    Empty(MeterId),
    #[error("binding_overlap: meter {0} would be bound twice at once")]
    Overlap(MeterId),
    #[error("binding_out_of_range: a local time of meter {0}'s binding has no instant")]
    OutOfRange(MeterId),
    #[error("billing_day_invalid: {0} is not a day from 1 to 28")]
    BillingDay(u32),
    #[error("bad_binding: {0}")]
    Document(String),
    #[error("binding_fixed: meter {0} already has a binding from this start with another customer, supply point, tariff or zone")]
    Fixed(MeterId),
}

/// Every meter's bindings, non-overlapping per meter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    by_meter: BTreeMap<MeterId, Vec<Binding>>,
}

impl Bindings {
    pub fn new() -> Self {
        Bindings::default()
    }

    /// Adds a binding; refuses one overlapping another of the same meter.
    pub fn add(&mut self, binding: Binding) -> Result<(), BindingError> {
        if !(1..=28).contains(&binding.billing_day) {
            return Err(BindingError::BillingDay(binding.billing_day));
        }
        let (from, to) = binding.utc_range().ok_or_else(|| BindingError::OutOfRange(binding.meter.clone()))?;
        if to.is_some_and(|to| to <= from) {
            return Err(BindingError::Empty(binding.meter.clone()));
        }
        let existing = self.by_meter.entry(binding.meter.clone()).or_default();
        for other in existing.iter() {
            let (other_from, other_to) =
                other.utc_range().ok_or_else(|| BindingError::OutOfRange(other.meter.clone()))?;
            let before = to.is_some_and(|to| to <= other_from);
            let after = other_to.is_some_and(|other_to| other_to <= from);
            if !(before || after) {
                return Err(BindingError::Overlap(binding.meter.clone()));
            }
        }
        existing.push(binding);
        existing.sort_by_key(|binding| binding.from);
        Ok(())
    }

    /// Every meter's bindings from a list (e.g. one meter's, as the ledger stores them).
    pub fn from_list(list: impl IntoIterator<Item = Binding>) -> Result<Self, BindingError> {
        let mut bindings = Bindings::new();
        for binding in list {
            bindings.add(binding)?;
        }
        Ok(bindings)
    }

    /// One meter's bindings, by start.
    pub fn of_meter(&self, meter: &MeterId) -> &[Binding] {
        self.by_meter.get(meter).map_or(&[], Vec::as_slice)
    }

    /// Adds `binding`, or, when the meter has a binding from the same start to the same
    /// customer, supply point, tariff and zone, replaces its end (a move-out ends an open
    /// binding; a later move-in may reopen it). The result must not overlap.
    pub fn upsert(&mut self, binding: Binding) -> Result<(), BindingError> {
        let existing = self.by_meter.get(&binding.meter).cloned().unwrap_or_default();
        let same_start = existing.iter().position(|other| other.from == binding.from);
        let mut rebuilt = Bindings { by_meter: self.by_meter.clone() };
        if let Some(index) = same_start {
            let other = &existing[index];
            let same_terms = other.customer == binding.customer
                && other.supply_point == binding.supply_point
                && other.tariff == binding.tariff
                && other.time_zone == binding.time_zone
                && other.billing_day == binding.billing_day;
            if !same_terms {
                return Err(BindingError::Fixed(binding.meter.clone()));
            }
            let mut kept = existing.clone();
            kept.remove(index);
            rebuilt.by_meter.insert(binding.meter.clone(), kept);
        }
        rebuilt.add(binding)?;
        *self = rebuilt;
        Ok(())
    }

    /// The binding a meter's interval starting at `start` belongs to: the one covering its
    /// start, else one starting inside it (a meter installed mid-interval at an exchange: its
    /// first partial interval is its own). Bindings may start and end at any instant.
    pub fn lookup(&self, meter: &MeterId, start: UnixSeconds) -> Result<&Binding, Unbound> {
        let bindings = self.by_meter.get(meter).ok_or_else(|| Unbound::NoBinding(meter.clone()))?;
        let end = start.0 + crate::limits::SETTLEMENT_INTERVAL_SECONDS;
        let starts_inside =
            |binding: &Binding| binding.utc_range().is_some_and(|(from, _)| start < from && from.0 < end);
        bindings
            .iter()
            .find(|binding| binding.covers(start))
            .or_else(|| bindings.iter().find(|binding| starts_inside(binding)))
            .ok_or_else(|| Unbound::OutsideBindings { meter: meter.clone(), start: start.0 })
    }
}

/// Sums intervals of several meters of one supply point (a meter exchange inside an interval:
/// the old meter's part up to its final read and the new meter's from its initial read), so
/// the period's tiers and demand see the supply point's energy.
pub fn combine(intervals: impl IntoIterator<Item = IntervalEnergy>) -> Result<Vec<IntervalEnergy>, Overflow> {
    let mut sums: BTreeMap<UnixSeconds, IntervalEnergy> = BTreeMap::new();
    for interval in intervals {
        let entry =
            sums.entry(interval.start).or_insert(IntervalEnergy { start: interval.start, import_wh: 0, export_wh: 0 });
        entry.import_wh =
            entry.import_wh.checked_add(interval.import_wh).ok_or_else(|| crate::tariff::line::overflow("import"))?;
        entry.export_wh =
            entry.export_wh.checked_add(interval.export_wh).ok_or_else(|| crate::tariff::line::overflow("export"))?;
    }
    Ok(sums.into_values().collect())
}
