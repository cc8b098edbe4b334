//! Any HTTP body a gateway could send the ledger: parsing a reading batch, opening its envelopes
//! and checking its gateway signature never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    if let Ok(batch) = serde_json::from_slice::<domain::api::SubmitReadings>(body) {
        for envelope in &batch.readings {
            let _ = envelope.open();
        }
        if let Some(signature) = &batch.gateway_signature {
            let _ = signature.verify(&batch.gateway_id, &batch.readings);
        }
    }
});
