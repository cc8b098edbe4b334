//! Identifier and unit newtypes. Constructors validate; fields are private.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::{ID_BYTES_MAX, METER_ID_BYTES_MAX};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {length} bytes, limit {limit}")]
    TooLong { kind: &'static str, length: usize, limit: usize },
    #[error("{kind} contains {character:?}; allowed are ASCII letters, digits, '-', '_' and '.'")]
    BadCharacter { kind: &'static str, character: char },
}

fn check_id(kind: &'static str, value: &str, limit: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > limit {
        return Err(IdError::TooLong { kind, length: value.len(), limit });
    }
    if let Some(character) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(IdError::BadCharacter { kind, character });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $limit:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_id($kind, &value, $limit)?;
                Ok(Self(value))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }
    };
}

string_id!(
    /// A meter's serial, e.g. `WTL0000000001`: at most 16 printable ASCII characters.
    MeterId, "meter id", METER_ID_BYTES_MAX
);
string_id!(
    /// A customer (billing account holder).
    CustomerId, "customer id", ID_BYTES_MAX
);
string_id!(
    /// A party money is owed to or by: a customer, a supplier, the grid operator, the tax
    /// authority or a levy recipient. One namespace, so an account names its holder unambiguously.
    PartyId, "party id", ID_BYTES_MAX
);
string_id!(
    /// A tariff version, e.g. `de-tou-2026-01`: what a binding and every priced line name.
    TariffId, "tariff id", ID_BYTES_MAX
);
string_id!(
    /// A consortium member (issue 14): a party with a key that proposes and votes, or an
    /// auditor that reads and votes only where the constitution says.
    MemberId, "member id", ID_BYTES_MAX
);
string_id!(
    /// An edge gateway.
    GatewayId, "gateway id", ID_BYTES_MAX
);
string_id!(
    /// A service governance registered to read private data (issue 15), e.g. `billing`.
    ReaderId, "reader id", ID_BYTES_MAX
);

/// Which of a meter's keys signed a reading (keys rotate; old readings keep verifying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyId(pub u32);

/// A meter's reading counter: rises by exactly 1 per reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sequence(pub u64);

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixSeconds(pub i64);

/// Milliseconds since the Unix epoch, UTC, as stamped by the ledger leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixMillis(pub i64);

/// Energy in whole watt-hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct EnergyWh(pub u64);

/// An application transaction id, chosen by whoever builds the transaction; unique per ledger.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub [u8; 16]);

impl fmt::Debug for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxId({})", hex::encode(self.0))
    }
}
impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(MeterId::new("WTL0000000001").is_ok());
        assert_eq!(MeterId::new(""), Err(IdError::Empty { kind: "meter id" }));
        assert!(matches!(MeterId::new("x".repeat(17)), Err(IdError::TooLong { .. })));
        assert!(matches!(CustomerId::new("a b"), Err(IdError::BadCharacter { character: ' ', .. })));
        let parsed: MeterId = serde_json::from_str("\"M-1\"").expect("valid id");
        assert_eq!(parsed.as_str(), "M-1");
        assert!(serde_json::from_str::<MeterId>("\"M 1\"").is_err());
    }
}
