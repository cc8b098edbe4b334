//! Any bytes: the history record decoder never panics, what it accepts re-encodes to the same
//! bytes, and recomputing its leaf (which decodes the entry inside) never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(record) = ledger::store::HistoryRecord::decode(bytes) {
        assert_eq!(record.encode(), bytes);
        let _ = record.computed_leaf();
    }
});
