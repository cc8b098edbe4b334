//! Parsing (TOML, canonical JSON) and validation of a tariff version. A refused tariff names the
//! field and the reason, so an operator can fix the file and the ledger can refuse the admin
//! transaction with a stable message.

use rust_decimal::Decimal;
use thiserror::Error;

use crate::limits::{
    DYNAMIC_PRICE_PER_KWH_MIN, ID_BYTES_MAX, PRICE_PER_KWH_MAX, PRICE_SCALE_MAX, TARIFF_CHARGE_MAX,
    TARIFF_HOLIDAYS_MAX, TARIFF_LEVIES_MAX, TARIFF_SEASONS_MAX, TARIFF_TIERS_MAX, TARIFF_TOML_BYTES_MAX,
    TARIFF_WINDOWS_MAX,
};

use super::calendar::{season_index, window_index};
use super::model::{DayKind, EnergyPrice, Export, MonthDay, TariffVersion};

/// Why a tariff version was refused: the field (a path such as `energy.seasons[0].windows[2].to`)
/// and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("tariff_invalid: {field}: {reason}")]
pub struct TariffError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> TariffError {
    TariffError { field: field.into(), reason: reason.into() }
}

/// Parses a TOML tariff document (docs/tariffs.md) and validates it.
pub fn parse_toml(text: &str) -> Result<TariffVersion, TariffError> {
    if text.len() > TARIFF_TOML_BYTES_MAX {
        return Err(refuse("document", format!("{} bytes, limit {TARIFF_TOML_BYTES_MAX}", text.len())));
    }
    let tariff: TariffVersion = toml::from_str(text).map_err(|error| {
        let field = error.span().map(|span| format!("bytes {}..{}", span.start, span.end));
        refuse(field.unwrap_or_else(|| "document".into()), error.message().to_string())
    })?;
    tariff.validate()?;
    Ok(tariff)
}

impl TariffVersion {
    /// The canonical JSON the ledger stores in an admin transaction: struct fields in declaration
    /// order, sets sorted, decimals normalised text. Equal tariffs give equal bytes.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Serialising plain structs, strings and sorted sets cannot fail.
        serde_json::to_vec(self).expect("a tariff version serialises")
    }

    /// Decodes [`Self::to_canonical_json`] and validates, so a committed tariff is as checked as
    /// a parsed one. Refuses bytes that are not the canonical encoding of what they decode to.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<TariffVersion, TariffError> {
        let tariff: TariffVersion =
            serde_json::from_slice(bytes).map_err(|error| refuse("document", error.to_string()))?;
        tariff.validate()?;
        if tariff.to_canonical_json() != bytes {
            return Err(refuse("document", "not canonical JSON (field order, spacing or decimal form differs)"));
        }
        Ok(tariff)
    }

    /// Checks every invariant the pricing code relies on.
    pub fn validate(&self) -> Result<(), TariffError> {
        if let Some(to) = self.valid_to {
            if to <= self.valid_from {
                return Err(refuse("valid_to", format!("{to} is not after valid_from {}", self.valid_from)));
            }
        }
        let energy_flat = match &self.energy {
            EnergyPrice::Flat { per_kwh } => {
                price("energy.per_kwh", *per_kwh, false)?;
                Some(*per_kwh)
            }
            EnergyPrice::Dynamic { markup_per_kwh, fallback_per_kwh } => {
                price("energy.markup_per_kwh", *markup_per_kwh, true)?;
                price("energy.fallback_per_kwh", *fallback_per_kwh, true)?;
                None
            }
            EnergyPrice::TimeOfUse { holidays, seasons } => {
                validate_time_of_use(holidays.len(), seasons)?;
                None
            }
        };
        self.validate_tiers(energy_flat)?;
        if let Some(charge) = self.standing_charge_per_day {
            bounded("standing_charge_per_day", charge)?;
        }
        match &self.export {
            Some(Export::FeedIn { per_kwh }) => price("export.per_kwh", *per_kwh, false)?,
            Some(Export::Netting) if energy_flat.is_none() => {
                return Err(refuse("export.kind", "netting credits at the flat energy price; energy is not flat"));
            }
            _ => {}
        }
        if let Some(demand) = &self.demand {
            bounded("demand.per_kw", demand.per_kw)?;
        }
        if let Some(network) = &self.network {
            price("network.per_kwh", network.per_kwh, false)?;
        }
        if self.levies.len() > TARIFF_LEVIES_MAX {
            return Err(refuse("levies", format!("{} levies, limit {TARIFF_LEVIES_MAX}", self.levies.len())));
        }
        for (index, levy) in self.levies.iter().enumerate() {
            name(&format!("levies[{index}].name"), &levy.name)?;
            price(&format!("levies[{index}].per_kwh"), levy.per_kwh, false)?;
            if self.levies[..index].iter().any(|other| other.name == levy.name) {
                return Err(refuse(format!("levies[{index}].name"), format!("{:?} appears twice", levy.name)));
            }
        }
        if let Some(vat) = &self.vat {
            if vat.rate.is_sign_negative() || vat.rate >= Decimal::ONE || vat.rate.normalize().scale() > 4 {
                return Err(refuse(
                    "vat.rate",
                    format!("{} is not a fraction in [0, 1) with at most 4 places", vat.rate),
                ));
            }
            if vat.base.is_empty() {
                return Err(refuse("vat.base", "names no component; write the base down"));
            }
        }
        Ok(())
    }

    fn validate_tiers(&self, energy_flat: Option<Decimal>) -> Result<(), TariffError> {
        if self.tiers.is_empty() {
            return Ok(());
        }
        if energy_flat.is_none() {
            return Err(refuse("tiers", "tiers re-price a flat energy price; energy is not flat"));
        }
        if self.tiers.len() > TARIFF_TIERS_MAX {
            return Err(refuse("tiers", format!("{} tiers, limit {TARIFF_TIERS_MAX}", self.tiers.len())));
        }
        let mut previous = 0u64;
        for (index, tier) in self.tiers.iter().enumerate() {
            price(&format!("tiers[{index}].per_kwh"), tier.per_kwh, false)?;
            let last = index + 1 == self.tiers.len();
            match (tier.up_to_kwh, last) {
                (None, true) => {}
                (None, false) => return Err(refuse(format!("tiers[{index}].up_to_kwh"), "only the last tier is open")),
                (Some(_), true) => {
                    return Err(refuse(format!("tiers[{index}].up_to_kwh"), "the last tier must be open"))
                }
                (Some(bound), false) if bound <= previous || bound > 1_000_000_000 => {
                    return Err(refuse(
                        format!("tiers[{index}].up_to_kwh"),
                        format!("{bound} does not ascend from {previous} (or exceeds 10^9 kWh)"),
                    ));
                }
                (Some(bound), false) => previous = bound,
            }
        }
        Ok(())
    }
}

fn validate_time_of_use(holidays: usize, seasons: &[super::model::Season]) -> Result<(), TariffError> {
    if holidays > TARIFF_HOLIDAYS_MAX {
        return Err(refuse("energy.holidays", format!("{holidays} dates, limit {TARIFF_HOLIDAYS_MAX}")));
    }
    if seasons.is_empty() || seasons.len() > TARIFF_SEASONS_MAX {
        return Err(refuse("energy.seasons", format!("{} seasons, need 1 to {TARIFF_SEASONS_MAX}", seasons.len())));
    }
    let windows: usize = seasons.iter().map(|season| season.windows.len()).sum();
    if windows > TARIFF_WINDOWS_MAX {
        return Err(refuse("energy.seasons", format!("{windows} windows, limit {TARIFF_WINDOWS_MAX}")));
    }
    for (s, season) in seasons.iter().enumerate() {
        name(&format!("energy.seasons[{s}].name"), &season.name)?;
        for (w, window) in season.windows.iter().enumerate() {
            let field = format!("energy.seasons[{s}].windows[{w}]");
            name(&format!("{field}.name"), &window.name)?;
            price(&format!("{field}.per_kwh"), window.per_kwh, false)?;
            if window.days.is_empty() {
                return Err(refuse(format!("{field}.days"), "names no day kind"));
            }
            if window.from == window.to {
                return Err(refuse(format!("{field}.to"), "equals from: an empty window"));
            }
        }
    }
    // Every month-day (02-29 included) in exactly one season.
    for month in 1..=12u32 {
        for day in 1..=31u32 {
            if chrono::NaiveDate::from_ymd_opt(2024, month, day).is_none() {
                continue;
            }
            let month_day = MonthDay { month, day };
            let count = seasons.iter().filter(|season| super::calendar::in_season(season, month_day)).count();
            if count != 1 {
                return Err(refuse(
                    "energy.seasons",
                    format!("{month:02}-{day:02} is in {count} seasons, must be in 1"),
                ));
            }
        }
    }
    debug_assert!(season_index(seasons, MonthDay { month: 1, day: 1 }).is_some());
    // Every quarter-hour of every day kind in exactly one window of each season.
    for (s, season) in seasons.iter().enumerate() {
        for kind in [DayKind::Weekday, DayKind::Weekend, DayKind::Holiday] {
            for quarter in 0..96u32 {
                let count = season
                    .windows
                    .iter()
                    .filter(|window| super::calendar::window_covers(window, kind, quarter * 15))
                    .count();
                if count != 1 {
                    return Err(refuse(
                        format!("energy.seasons[{s}].windows"),
                        format!(
                            "{kind:?} {:02}:{:02} is in {count} windows, must be in 1",
                            quarter * 15 / 60,
                            quarter * 15 % 60
                        ),
                    ));
                }
            }
            debug_assert!(window_index(season, kind, 0).is_some());
        }
    }
    Ok(())
}

/// A per-kWh price within the named limits; negative only where allowed (dynamic prices).
fn price(field: &str, value: Decimal, allow_negative: bool) -> Result<(), TariffError> {
    if value.is_sign_negative() && !value.is_zero() {
        if !allow_negative {
            return Err(refuse(field, format!("{value} is below zero")));
        }
        if value < Decimal::from(DYNAMIC_PRICE_PER_KWH_MIN) {
            return Err(refuse(field, format!("{value} is below {DYNAMIC_PRICE_PER_KWH_MIN}")));
        }
    }
    if value > Decimal::from(PRICE_PER_KWH_MAX) {
        return Err(refuse(field, format!("{value} is above {PRICE_PER_KWH_MAX}")));
    }
    if value.normalize().scale() > PRICE_SCALE_MAX {
        return Err(refuse(field, format!("{value} has more than {PRICE_SCALE_MAX} decimal places")));
    }
    Ok(())
}

/// A non-negative charge (per day, per kW) within `TARIFF_CHARGE_MAX`.
fn bounded(field: &str, value: Decimal) -> Result<(), TariffError> {
    if value.is_sign_negative() && !value.is_zero() {
        return Err(refuse(field, format!("{value} is below zero")));
    }
    if value > Decimal::from(TARIFF_CHARGE_MAX) {
        return Err(refuse(field, format!("{value} is above {TARIFF_CHARGE_MAX}")));
    }
    if value.normalize().scale() > PRICE_SCALE_MAX {
        return Err(refuse(field, format!("{value} has more than {PRICE_SCALE_MAX} decimal places")));
    }
    Ok(())
}

/// Line names appear on statements and in component keys: short, printable, no separators.
fn name(field: &str, value: &str) -> Result<(), TariffError> {
    if value.is_empty() || value.len() > ID_BYTES_MAX {
        return Err(refuse(field, format!("{value:?} must be 1 to {ID_BYTES_MAX} bytes")));
    }
    if let Some(character) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))) {
        return Err(refuse(
            field,
            format!("{value:?} contains {character:?}; allowed are ASCII letters, digits, '-', '_'"),
        ));
    }
    Ok(())
}
