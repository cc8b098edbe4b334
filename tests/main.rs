//! Wattle's integration tests: real processes (`wattle` through `CARGO_BIN_EXE_wattle`), real
//! mosquitto, real RocksDB in temporary directories, all on 127.0.0.1.

mod attestation;
mod audit;
mod bench;
mod billing;
mod cluster;
mod confidentiality;
mod credit_notes;
mod customer_page;
mod end_to_end;
mod endorsement_expiry;
mod fleet;
mod gateway;
mod gateway_access;
mod gateway_faults;
mod gateway_garbage;
mod gateway_held;
mod gateway_modbus;
mod gateway_restart;
mod gateway_tls;
mod governance;
mod invoice_month;
mod ledger_admission;
mod ledger_tls;
mod modbus;
mod new_cluster;
mod oidc;
mod peer_auth;
mod postgres;
mod private_reads;
#[path = "../src/process.rs"]
mod process;
mod recovery;
mod registry;
mod sandbox;
mod secret_rotation;
// The sandbox tariff's published dynamic prices, for tests/invoice_month.rs's own reckoning.
#[path = "../src/sandbox_tariff.rs"]
#[allow(dead_code)]
mod sandbox_tariff;
mod settlement;
mod support;
mod tariff_cli;
mod verifiable;
