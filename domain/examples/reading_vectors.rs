//! Prints the test vectors of `docs/reading-format.md`: `cargo run -p domain --example reading_vectors`.

use domain::ids::{KeyId, MeterId, Sequence, UnixSeconds};
use domain::reading::{ClockStatus, FirmwareVersion, Reading, StatusFlags};
use ed25519_dalek::SigningKey;

/// RFC 8032 section 7.1, tests 1 to 3: well-known secret keys.
const SECRET_KEYS: [&str; 3] = [
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
];

fn key(index: usize) -> SigningKey {
    let bytes: [u8; 32] = hex::decode(SECRET_KEYS[index]).expect("hex").try_into().expect("32 bytes");
    SigningKey::from_bytes(&bytes)
}

fn readings() -> Vec<Reading> {
    let base = Reading {
        meter_id: MeterId::new("1EMH0012345678").expect("id"),
        key_id: KeyId(1),
        sequence: Sequence(1),
        interval_start: UnixSeconds(1_767_225_600), // 2026-01-01T00:00:00Z
        interval_end: UnixSeconds(1_767_226_500),
        import_start_wh: 1_234_567,
        import_end_wh: 1_234_812,
        export_start_wh: 0,
        export_end_wh: 0,
        register_modulus_wh: 1_000_000_000_000,
        clock_status: ClockStatus::Synchronized,
        status: StatusFlags::default(),
        firmware: FirmwareVersion(0x01_02_03),
    };
    let second = Reading {
        meter_id: MeterId::new("WTL-PV-0042").expect("id"),
        key_id: KeyId(7),
        sequence: Sequence(96_001),
        interval_start: UnixSeconds(1_782_820_800), // 2026-06-30T12:00:00Z
        interval_end: UnixSeconds(1_782_821_700),
        import_start_wh: 88_000,
        import_end_wh: 88_000,
        export_start_wh: 5_400_100,
        export_end_wh: 5_401_350,
        clock_status: ClockStatus::Informative,
        status: StatusFlags::new(StatusFlags::CLOCK_ADJUSTED).expect("flag"),
        ..base.clone()
    };
    // A rollover: the import register passes 999,999,999 Wh and restarts.
    let third = Reading {
        meter_id: MeterId::new("SDM-7").expect("id"),
        key_id: KeyId(2),
        sequence: Sequence(u64::from(u32::MAX) + 5),
        import_start_wh: 999_999_900,
        import_end_wh: 150,
        register_modulus_wh: 1_000_000_000,
        clock_status: ClockStatus::Unsynchronized,
        status: StatusFlags::new(StatusFlags::POWER_OUTAGE | StatusFlags::TAMPER).expect("flags"),
        ..base.clone()
    };
    vec![base, second, third]
}

fn main() {
    for (index, reading) in readings().iter().enumerate() {
        let key = key(index);
        let signed = reading.sign(&key).expect("valid reading");
        println!("```vector");
        println!("secret_key: {}", SECRET_KEYS[index]);
        println!("public_key: {}", hex::encode(key.verifying_key().to_bytes()));
        println!("meter_id: {}", reading.meter_id);
        println!("key_id: {}", reading.key_id.0);
        println!("sequence: {}", reading.sequence.0);
        println!("interval: {} .. {}", reading.interval_start.0, reading.interval_end.0);
        println!("import_wh: {} -> {}", reading.import_start_wh, reading.import_end_wh);
        println!("export_wh: {} -> {}", reading.export_start_wh, reading.export_end_wh);
        println!("register_modulus_wh: {}", reading.register_modulus_wh);
        println!("clock_status: {:?}", reading.clock_status);
        println!("status: {:#x}", reading.status.bits());
        println!("firmware: {}", reading.firmware);
        println!("import_energy_wh: {}", reading.import_energy().0);
        println!("canonical: {}", hex::encode(signed.bytes()));
        println!("signature: {}", hex::encode(signed.signature()));
        println!("```\n");
    }
    print_rejects();
}

/// The group order L, little-endian (RFC 8032 section 5.1).
const GROUP_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn reject(name: &str, expect: &str, why: &str, public_key: [u8; 32], canonical: &[u8], signature: &[u8]) {
    println!("```reject");
    println!("name: {name}");
    println!("why: {why}");
    println!("public_key: {}", hex::encode(public_key));
    println!("canonical: {}", hex::encode(canonical));
    println!("signature: {}", hex::encode(signature));
    println!("expect: {expect}");
    println!("```\n");
}

fn print_rejects() {
    use ed25519_dalek::Signer;
    let key_one = key(0);
    let public_one = key_one.verifying_key().to_bytes();
    let signed = readings()[0].sign(&key_one).expect("valid");
    let canonical = signed.bytes().to_vec();
    let signature = signed.signature().to_vec();

    let mut flipped = canonical.clone();
    flipped[76] ^= 0x01; // lowest bit of import_end_wh
    reject(
        "bit_flip",
        "signature",
        "one bit of the import register flipped after signing",
        public_one,
        &flipped,
        &signature,
    );

    let mut high_s = signature.clone();
    let mut carry = 0u16;
    for (index, byte) in high_s[32..].iter_mut().enumerate() {
        let sum = u16::from(*byte) + u16::from(GROUP_ORDER_LE[index]) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    reject(
        "non_canonical_s",
        "signature",
        "S replaced by S + L: ZIP-215 requires S < L",
        public_one,
        &canonical,
        &high_s,
    );

    let other = readings()[0].sign(&key(1)).expect("valid");
    reject("wrong_key", "signature", "signed by another meter's key", public_one, &canonical, other.signature());

    let mut trailing = canonical.clone();
    trailing.push(0);
    let trailing_signature = key_one.sign(&trailing).to_bytes();
    reject(
        "trailing_byte",
        "decode",
        "one byte after the 110-byte layout, validly signed",
        public_one,
        &trailing,
        &trailing_signature,
    );

    let mut version = canonical.clone();
    version[15] = 2;
    let version_signature = key_one.sign(&version).to_bytes();
    reject(
        "unknown_version",
        "decode",
        "format version 2 does not exist, validly signed",
        public_one,
        &version,
        &version_signature,
    );

    let mut status = canonical.clone();
    status[105] |= 0x80; // an undefined status bit
    let status_signature = key_one.sign(&status).to_bytes();
    reject(
        "undefined_status_bit",
        "decode",
        "status bit 7 is not defined, validly signed",
        public_one,
        &status,
        &status_signature,
    );

    let mut padding = canonical.clone();
    padding[32] = b'X'; // a character after the NUL padding of the meter id
    let padding_signature = key_one.sign(&padding).to_bytes();
    reject(
        "meter_id_padding",
        "decode",
        "non-zero byte after the meter id's NUL padding, validly signed",
        public_one,
        &padding,
        &padding_signature,
    );

    let mut truncated = canonical.clone();
    truncated.truncate(109);
    let truncated_signature = key_one.sign(&truncated).to_bytes();
    reject("truncated", "decode", "109 bytes, validly signed", public_one, &truncated, &truncated_signature);

    // ZIP-215 accepts this (small-order key and R, S = 0); ed25519-dalek's verify_strict would not.
    // Every Wattle verifier must agree, so this one is accepted by the signature rule, and the
    // registry refuses small-order keys instead (`reading::is_acceptable_public_key`).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut small_order_signature = [0u8; 64];
    small_order_signature[0] = 1;
    reject(
        "small_order_key",
        "registry",
        "identity point as key and R, S = 0: verifies under ZIP-215, so the registry must refuse the key",
        identity,
        &canonical,
        &small_order_signature,
    );
}
