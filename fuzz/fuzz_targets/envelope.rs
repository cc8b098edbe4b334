//! Any MQTT payload: parsing and opening an envelope never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|payload: &[u8]| {
    if let Ok(envelope) = domain::reading::Envelope::parse_json(payload) {
        let _ = envelope.open();
    }
});
