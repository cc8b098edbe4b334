//! Any bytes, as a receipt file a user hands to `wattle receipt verify`: neither decoder (canonical
//! bytes, JSON form) panics, nor does verifying what they accept; the canonical decoder accepts
//! only its own encoding, and the JSON form round-trips.
#![no_main]
use domain::receipt::Receipt;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(receipt) = Receipt::decode(bytes) {
        assert_eq!(receipt.encode(), bytes);
        let _ = receipt.verify(&receipt.node_key, Some(bytes));
    }
    if let Ok(receipt) = Receipt::from_json(bytes) {
        assert_eq!(Receipt::from_json(receipt.to_json().as_bytes()).as_ref(), Ok(&receipt));
        let _ = receipt.verify(&receipt.node_key, None);
    }
});
