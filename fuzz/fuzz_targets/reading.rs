//! Any bytes: the reading decoder never panics, and what it accepts re-encodes to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(reading) = domain::reading::Reading::decode(bytes) {
        assert_eq!(reading.encode().expect("a decoded reading is valid"), bytes);
    }
});
