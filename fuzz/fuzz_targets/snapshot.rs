//! Any bytes as a snapshot data file (one a peer sends): reading its records never panics, and
//! what it accepts is exactly what the snapshot writer writes for those records.
#![no_main]
use std::io::Write;

use ledger::snapshot::{read_records, SnapshotWriter};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let mut file = tempfile::tempfile().expect("a temporary file");
    file.write_all(bytes).expect("the input is written");
    if let Ok(records) = read_records(&mut file) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("rewritten");
        let mut writer = SnapshotWriter::create(&path).expect("a snapshot file");
        for (cf, key, value) in &records {
            writer.record(*cf, key, value).expect("a record");
        }
        writer.finish(false).expect("finished");
        assert_eq!(std::fs::read(&path).expect("readable"), bytes);
    }
});
