//! Money and prices in `rust_decimal`, with the currency alongside. No floats.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::limits::{PRICE_PER_KWH_MAX, PRICE_SCALE_MAX};

/// Why a currency or amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}; supported: EUR, GBP, USD, CHF, DKK, SEK, NOK, PLN, CZK")]
    UnknownCurrency(String),
    #[error("not a decimal number: {0}")]
    BadNumber(String),
}

/// An ISO 4217 currency this platform bills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

const CURRENCIES: [(&str, u32); 9] =
    [("EUR", 2), ("GBP", 2), ("USD", 2), ("CHF", 2), ("DKK", 2), ("SEK", 2), ("NOK", 2), ("PLN", 2), ("CZK", 2)];

impl Currency {
    /// A supported currency by its ISO code.
    pub fn new(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(known, _)| {
                let mut bytes = [0u8; 3];
                bytes.copy_from_slice(known.as_bytes());
                Currency(bytes)
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }
    /// The ISO code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).expect("constructed from an ASCII table entry")
    }
    /// Digits of the minor unit (2 for cents).
    pub fn minor_unit_digits(&self) -> u32 {
        CURRENCIES.iter().find(|(known, _)| *known == self.code()).map(|(_, digits)| *digits).expect("known currency")
    }
    pub(crate) fn encode(&self, writer: &mut Writer) {
        writer.fixed(&self.0);
    }
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let raw: [u8; 3] = reader.array()?;
        let code = std::str::from_utf8(&raw).map_err(|_| DecodeError::invalid("currency", "not ASCII"))?;
        Currency::new(code).map_err(|error| DecodeError::invalid("currency", error.to_string()))
    }
}
impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, MoneyError> {
        Currency::new(&value)
    }
}
impl From<Currency> for String {
    fn from(value: Currency) -> String {
        value.code().to_string()
    }
}
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money at full precision (unrounded), in a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    /// Rounds once to the currency's minor unit, half away from zero (German and UK practice;
    /// `round_dp` alone would round half to even).
    pub fn round_to_minor_unit(&self) -> Money {
        Money {
            amount: self
                .amount
                .round_dp_with_strategy(self.currency.minor_unit_digits(), RoundingStrategy::MidpointAwayFromZero),
            currency: self.currency,
        }
    }
}

/// A price per kWh in a currency, at full precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPrice {
    pub per_kwh: Decimal,
    pub currency: Currency,
}

/// Why a price was refused (committed admin actions are refused with this reason, never applied).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PriceError {
    #[error("price_negative: {0} per kWh is below zero")]
    Negative(Decimal),
    #[error("price_too_large: {0} per kWh is above {PRICE_PER_KWH_MAX}")]
    TooLarge(Decimal),
    #[error("price_too_precise: {0} per kWh has more than {PRICE_SCALE_MAX} decimal places")]
    TooPrecise(Decimal),
}

impl PriceError {
    /// Stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            PriceError::Negative(_) => "price_negative",
            PriceError::TooLarge(_) => "price_too_large",
            PriceError::TooPrecise(_) => "price_too_precise",
        }
    }
}

impl UnitPrice {
    /// Checks sign, magnitude and scale against the named limits (`limits::PRICE_*`), so that
    /// settling any plausible reading at this price cannot leave `Decimal`'s range.
    pub fn validate(&self) -> Result<(), PriceError> {
        let price = self.per_kwh;
        if price.is_sign_negative() && !price.is_zero() {
            return Err(PriceError::Negative(price));
        }
        if price > Decimal::from(PRICE_PER_KWH_MAX) {
            return Err(PriceError::TooLarge(price));
        }
        if price.normalize().scale() > PRICE_SCALE_MAX {
            return Err(PriceError::TooPrecise(price));
        }
        Ok(())
    }
    pub(crate) fn encode(&self, writer: &mut Writer) {
        encode_decimal(writer, self.per_kwh);
        self.currency.encode(writer);
    }
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(UnitPrice { per_kwh: decode_decimal(reader, "per_kwh")?, currency: Currency::decode(reader)? })
    }
}

/// Canonical decimal: the normalised mantissa as i128 and the scale as u8.
pub fn encode_decimal(writer: &mut Writer, value: Decimal) {
    let normalized = value.normalize();
    writer.i128(normalized.mantissa()).u8(normalized.scale() as u8);
}

/// Decodes [`encode_decimal`]; refuses non-normalised or out-of-range encodings.
pub fn decode_decimal(reader: &mut Reader<'_>, field: &'static str) -> Result<Decimal, DecodeError> {
    let mantissa = reader.i128()?;
    let scale = reader.u8()?;
    let value = Decimal::try_from_i128_with_scale(mantissa, u32::from(scale))
        .map_err(|error| DecodeError::invalid(field, error.to_string()))?;
    let normalized = value.normalize();
    if normalized.mantissa() != mantissa || normalized.scale() != u32::from(scale) {
        return Err(DecodeError::invalid(field, "decimal is not normalised"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn rounding_is_half_away_from_zero() {
        let eur = Currency::new("EUR").expect("EUR");
        // DOMAIN.md: tax on 250 kWh at 2.05 ct = 512.5 ct -> EUR 5.13.
        let money = Money { amount: Decimal::from_str("5.125").expect("decimal"), currency: eur };
        assert_eq!(money.round_to_minor_unit().amount, Decimal::from_str("5.13").expect("decimal"));
        let negative = Money { amount: Decimal::from_str("-5.125").expect("decimal"), currency: eur };
        assert_eq!(negative.round_to_minor_unit().amount, Decimal::from_str("-5.13").expect("decimal"));
    }

    #[test]
    fn prices_are_checked_for_sign_magnitude_and_scale() {
        let eur = Currency::new("EUR").expect("EUR");
        let check =
            |text: &str| UnitPrice { per_kwh: Decimal::from_str(text).expect("decimal"), currency: eur }.validate();
        for good in ["0", "0.3127", "1000", "0.00000001", "0.30000000000"] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for (bad, code) in [
            ("-0.01", "price_negative"),
            ("1000.00000001", "price_too_large"),
            ("100000000000000000000", "price_too_large"),
            ("0.000000001", "price_too_precise"),
        ] {
            assert_eq!(check(bad).map_err(|error| error.code()), Err(code), "{bad}");
        }
    }

    #[test]
    fn decimals_round_trip_and_reject_denormal() {
        let value = Decimal::from_str("0.30120").expect("decimal");
        let mut writer = Writer::new();
        encode_decimal(&mut writer, value);
        let bytes = writer.finish();
        let mut reader = Reader::new(&bytes);
        assert_eq!(decode_decimal(&mut reader, "x").expect("decodes"), value);
        let mut denormal = Writer::new();
        denormal.i128(30120).u8(5);
        let denormal = denormal.finish();
        assert!(decode_decimal(&mut Reader::new(&denormal), "x").is_err());
    }
}
