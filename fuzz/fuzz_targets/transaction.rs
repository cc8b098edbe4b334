//! Any bytes: the transaction decoder never panics, and what it accepts re-encodes to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(transaction) = domain::tx::Transaction::decode(bytes) {
        assert_eq!(transaction.encode(), bytes);
    }
});
