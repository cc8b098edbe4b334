//! The consortium ledger: openraft (0.9, storage-v2) over RocksDB, a sans-IO state machine that
//! deduplicates and settles readings, and the HTTP API that gateways and billing use.

pub mod admin;
#[cfg(feature = "rocksdb")]
pub mod admin_config;
pub mod admission;
pub mod api;
pub mod audit;
pub mod danger;
pub mod driver;
pub mod entry;
pub mod estimate;
pub mod forward;
pub mod gov_api;
pub mod governance;
pub mod history;
pub mod kv;
pub mod limits;
pub mod metrics;
pub mod network;
#[cfg(feature = "rocksdb")]
pub mod node;
pub mod peer_auth;
pub mod receipts;
pub mod registry;
pub mod runtime;
pub mod settle;
pub mod signer;
pub mod simulation;
pub mod snapshot;
pub mod state;
pub mod statements;
pub mod store;
pub mod submit;
pub mod tariffs;
pub mod ticker;
