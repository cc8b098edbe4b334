//! Any registers a Modbus device could answer with: walking the SunSpec chain, decoding model 203,
//! the signed record and SDM630 energy never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let registers: Vec<u16> = bytes.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
    let _ = domain::modbus::walk_models(&registers);
    let _ = domain::modbus::decode_meter_model(&registers);
    let _ = domain::modbus::decode_signed_record(&registers);
    for start in 0..registers.len().min(8) {
        let _ = domain::modbus::decode_signed_record(&registers[start..]);
        let _ = domain::modbus::sdm630_energy_wh(&registers[start..], "import");
    }
});
