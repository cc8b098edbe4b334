//! The tariff version as data: what the consortium approves, what the ledger stores in an admin
//! transaction (canonical JSON) and what every priced line names.
//!
//! Every field here has passed [`TariffVersion::validate`] once it leaves [`super::parse_toml`] or
//! [`TariffVersion::from_canonical_json`]; the pricing code relies on that (windows cover each day
//! exactly once, seasons cover each month-day exactly once, tiers ascend).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::ids::{PartyId, TariffId};
use crate::money::Currency;

use super::decimal_text::{dec, dec_opt};

/// The tz database this build resolves local times with. Local time is part of the money (a ToU
/// window, a standing-charge day), so the ledger names this version in the entries it settles;
/// a different tz database is a different rules version.
pub const TZDB_VERSION: &str = chrono_tz::IANA_TZDB_VERSION;

/// One approved tariff version, valid over a half-open range of the customer's local date-times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffVersion {
    pub id: TariffId,
    pub currency: Currency,
    /// Who sells the energy: creditor of energy, tiers, standing and demand charges (unless the
    /// demand charge names its own recipient), debtor of export credits, holder of rounding.
    pub supplier: PartyId,
    pub time_zone: TimeZone,
    /// Inclusive start, local time of `time_zone`.
    pub valid_from: NaiveDateTime,
    /// Exclusive end; open-ended when absent (until the next version replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDateTime>,
    #[serde(default)]
    pub rounding: Rounding,
    pub energy: EnergyPrice,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "dec_opt")]
    pub standing_charge_per_day: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<Export>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<DemandCharge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkCharge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levies: Vec<Levy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat: Option<Vat>,
}

impl TariffVersion {
    /// Every party the tariff names besides customers: supplier, grid operator, levy
    /// recipients, tax authority, demand recipient. A customer must not be one of them.
    pub fn parties(&self) -> BTreeSet<&PartyId> {
        let mut parties = BTreeSet::new();
        parties.insert(&self.supplier);
        parties.extend(self.network.as_ref().map(|network| &network.operator));
        parties.extend(self.levies.iter().map(|levy| &levy.recipient));
        parties.extend(self.vat.as_ref().map(|vat| &vat.authority));
        parties.extend(self.demand.as_ref().and_then(|demand| demand.recipient.as_ref()));
        parties
    }
}

/// How a statement line is rounded to the currency's minor unit, named in the tariff because
/// jurisdictions differ: German and UK practice is half away from zero (the default);
/// half-even ("banker's") is available where a contract says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    #[default]
    HalfAwayFromZero,
    HalfEven,
}

impl Rounding {
    /// Rounds an amount to `digits` decimal places by this strategy.
    pub fn round(self, amount: Decimal, digits: u32) -> Decimal {
        let strategy = match self {
            Rounding::HalfAwayFromZero => RoundingStrategy::MidpointAwayFromZero,
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
        };
        amount.round_dp_with_strategy(digits, strategy)
    }
}

/// An IANA time zone, serialised by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(Tz);

impl TimeZone {
    pub fn tz(&self) -> Tz {
        self.0
    }
}
impl FromStr for TimeZone {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        Tz::from_str(name)
            .map(TimeZone)
            .map_err(|_| format!("{name:?} is not an IANA time zone in tzdb {TZDB_VERSION}"))
    }
}
impl TryFrom<String> for TimeZone {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        name.parse()
    }
}
impl From<TimeZone> for String {
    fn from(zone: TimeZone) -> String {
        zone.0.name().to_string()
    }
}

/// The energy price per kWh of imported energy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnergyPrice {
    Flat {
        #[serde(with = "dec")]
        per_kwh: Decimal,
    },
    /// Windows in local time by day kind, within seasons.
    TimeOfUse {
        /// Public holidays (local dates): priced as `holiday` days, whatever weekday they fall on.
        #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
        holidays: BTreeSet<NaiveDate>,
        seasons: Vec<Season>,
    },
    /// A price per 15-minute interval from a separate price series (may be negative), plus a
    /// fixed markup; `fallback_per_kwh` prices an interval whose series price is missing, and
    /// the interval is flagged `dynamic_price_fallback`.
    Dynamic {
        #[serde(default, with = "dec")]
        markup_per_kwh: Decimal,
        #[serde(with = "dec")]
        fallback_per_kwh: Decimal,
    },
}

/// A season: an inclusive range of month-days (may wrap the year end, e.g. 10-01..03-31).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Season {
    pub name: String,
    pub from: MonthDay,
    pub to: MonthDay,
    pub windows: Vec<Window>,
}

/// A time-of-use window: a half-open local clock range on some day kinds, at one price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub name: String,
    pub days: BTreeSet<DayKind>,
    pub from: ClockTime,
    /// Exclusive; `24:00` is the end of the day. A window with `to` before `from` wraps midnight.
    pub to: ClockTime,
    #[serde(with = "dec")]
    pub per_kwh: Decimal,
}

/// What kind of local day an interval falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayKind {
    Weekday,
    Weekend,
    Holiday,
}

/// A month and day, `MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MonthDay {
    pub month: u32,
    pub day: u32,
}

impl TryFrom<String> for MonthDay {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a month-day MM-DD");
        let (month, day) = text.split_once('-').ok_or_else(bad)?;
        if month.len() != 2 || day.len() != 2 {
            return Err(bad());
        }
        let month: u32 = month.parse().map_err(|_| bad())?;
        let day: u32 = day.parse().map_err(|_| bad())?;
        // 2024 is a leap year, so 02-29 is a valid month-day.
        NaiveDate::from_ymd_opt(2024, month, day).ok_or_else(bad)?;
        Ok(MonthDay { month, day })
    }
}
impl From<MonthDay> for String {
    fn from(value: MonthDay) -> String {
        format!("{:02}-{:02}", value.month, value.day)
    }
}

/// A local clock time at quarter-hour resolution, `HH:MM`, from `00:00` to `24:00`. Windows start
/// and end on quarter-hours so that no settlement interval straddles two windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime {
    minute_of_day: u32,
}

impl ClockTime {
    pub fn minute_of_day(&self) -> u32 {
        self.minute_of_day
    }
}
impl TryFrom<String> for ClockTime {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a clock time HH:MM on a quarter-hour, 00:00 to 24:00");
        let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(bad());
        }
        let hours: u32 = hours.parse().map_err(|_| bad())?;
        let minutes: u32 = minutes.parse().map_err(|_| bad())?;
        let minute_of_day = hours * 60 + minutes;
        if minutes >= 60 || minute_of_day > 1440 || minutes % 15 != 0 {
            return Err(bad());
        }
        Ok(ClockTime { minute_of_day })
    }
}
impl From<ClockTime> for String {
    fn from(value: ClockTime) -> String {
        format!("{:02}:{:02}", value.minute_of_day / 60, value.minute_of_day % 60)
    }
}
impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(*self))
    }
}

/// A block of the billing period's imported energy. Blocks ascend; the last has no upper bound.
/// Interval-local energy is priced at the flat energy price; period close posts, per block,
/// `kWh in block × (block price − flat price)` as the tier adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Upper bound of the block in whole kWh of the period, exclusive of the next block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_kwh: Option<u64>,
    #[serde(with = "dec")]
    pub per_kwh: Decimal,
}

/// How exported energy is paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Export {
    /// Net billing: every exported kWh is credited at the feed-in price, per interval
    /// (German EEG ≤10 kWp: 0.0794 €/kWh from Feb 2025).
    FeedIn {
        #[serde(with = "dec")]
        per_kwh: Decimal,
    },
    /// Net metering: at period close, `min(import, export)` kWh of the period are credited at
    /// the flat energy price (requires a flat energy price); network charge and levies stay on
    /// gross import.
    Netting,
}

/// A charge per kW on the highest 15-minute average power of the period
/// (kW = Wh in the interval × 4 / 1000).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemandCharge {
    #[serde(with = "dec")]
    pub per_kw: Decimal,
    /// Creditor; the supplier when absent (in Germany the grid operator's `Leistungspreis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<PartyId>,
}

/// The per-kWh network charge on imported energy, owed to the grid operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCharge {
    #[serde(with = "dec")]
    pub per_kwh: Decimal,
    pub operator: PartyId,
}

/// A named per-kWh levy on imported energy with its recipient (German electricity tax:
/// 0.0205 €/kWh to the customs authority).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Levy {
    pub name: String,
    #[serde(with = "dec")]
    pub per_kwh: Decimal,
    pub recipient: PartyId,
}

/// VAT at one rate on the sum of the rounded statement lines of the components in `base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vat {
    /// A fraction: 0.19 is 19 %.
    #[serde(with = "dec")]
    pub rate: Decimal,
    pub base: BTreeSet<VatBase>,
    pub authority: PartyId,
}

/// Components VAT can apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VatBase {
    Energy,
    Tiers,
    Standing,
    Demand,
    Network,
    Levies,
    Export,
}
