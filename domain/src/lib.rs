//! Wattle's shared, sans-IO domain: identifiers and units, the signed-reading format and its
//! canonical codec, verification under one acceptance rule (ZIP-215), money, settlement (the
//! walking skeleton's flat price in `settlement`; tariff versions and interval pricing in
//! `tariff`; interval mapping, periods, close, postings and VEE in `settle`), the ledger's
//! transaction codec and the JSON shapes of the ledger's client API.
//!
//! Nothing here touches the network, the disk or a database. The one exception is
//! [`clock::Clock::now`], which reads the wall clock for the runtimes; the ledger's state
//! machine and settlement never call it (the leader stamps time into transactions). The other is
//! the bearer-token file (`token::TokenStore`), behind the `token-file` feature that only the
//! services admitting tokens (billing, the gateway) turn on.

pub mod api;
pub mod client_read;
pub mod clock;
pub mod codec;
pub mod gov;
pub mod ids;
pub mod keyring;
pub mod limits;
pub mod merkle;
pub mod modbus;
pub mod money;
pub mod reading;
pub mod receipt;
pub mod settle;
pub mod settlement;
pub mod tariff;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;
pub mod tx;
pub mod verify;
