//! Decimals as quoted text in TOML and JSON: a TOML float is a binary float, so a price written
//! `0.3127` unquoted is refused rather than rounded through `f64`. Serialised normalised
//! (`0.30` → `"0.3"`), so equal tariffs have equal canonical JSON.

/// `#[serde(with = "dec")]` for `Decimal`.
pub mod dec {
    use std::str::FromStr;

    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.normalize().to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
    /// Plain decimal notation only (no exponent), as the format documents.
    pub(crate) fn parse(text: &str) -> Result<Decimal, String> {
        let plain = !text.is_empty()
            && text.trim_start_matches('-').chars().all(|c| c.is_ascii_digit() || c == '.')
            && text.trim_start_matches('-').chars().filter(|c| *c == '.').count() <= 1;
        if !plain {
            return Err(format!("{text:?} is not a decimal number written as text, e.g. \"0.3127\""));
        }
        Decimal::from_str(text).map_err(|error| format!("{text:?} is not a decimal number: {error}"))
    }
}

/// `#[serde(with = "dec_opt")]` for `Option<Decimal>`.
pub mod dec_opt {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::dec::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| super::dec::parse(&text).map_err(serde::de::Error::custom)).transpose()
    }
}
