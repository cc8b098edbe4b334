//! Any bytes as the gateway's persisted per-meter tracking state (read back from its RocksDB at
//! start): decoding never panics, and what it accepts re-encodes to the same bytes (states
//! written before `interval_end_s` existed gain that field) and decodes again. The tracker
//! is sans-IO; including its file keeps the gateway's RocksDB out of fuzz builds (DESIGN.md).
#![no_main]
#[allow(dead_code)]
#[path = "../../gateway/src/tracker.rs"]
mod tracker;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(state) = tracker::MeterState::decode(bytes) {
        let encoded = state.encode();
        assert!(encoded.starts_with(bytes) && encoded.len() - bytes.len() <= 8, "not canonical");
        let again = tracker::MeterState::decode(&encoded).expect("its own encoding decodes");
        assert_eq!(again.encode(), encoded);
    }
});
