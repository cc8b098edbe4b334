//! Any bytes: the raft entry decoder never panics, and what it accepts re-encodes to the same
//! bytes (the entry codec is canonical: its bytes are hashed into the Merkle tree).
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(entry) = ledger::entry::decode_entry(bytes) {
        assert_eq!(ledger::entry::encode_entry(&entry), bytes);
    }
});
