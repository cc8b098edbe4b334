//! Prints the test vectors of `docs/reading-format.md`: `cargo run -p domain --example reading_vectors`.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use domain::ids::{KeyId, MeterId, Sequence, UnixSeconds};
use domain::reading::{ClockStatus, FirmwareVersion, Reading, StatusFlags};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha512};

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
        let r = &signed.signature()[..32];
        println!("k: {}", hex::encode(k(r, &key.verifying_key().to_bytes(), signed.bytes()).to_bytes()));
        println!("```\n");
    }
    print_rejects();
    print_zip215();
}

/// `k = SHA-512(R ‖ A ‖ M) mod L`, with `R` and `A` exactly the bytes given (docs/reading-format.md).
fn k(r: &[u8], a: &[u8; 32], message: &[u8]) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&sha512(&[r, a, message]))
}

/// SHA-512 of the concatenation of `parts`.
fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut hash = Sha512::new();
    for part in parts {
        hash.update(part);
    }
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    wide
}

/// The secret scalar `a` of an RFC 8032 secret key: the clamped lower half of SHA-512(secret).
fn secret_scalar(secret: &[u8; 32]) -> Scalar {
    let mut lower = [0u8; 32];
    lower.copy_from_slice(&sha512(&[secret])[..32]);
    lower[0] &= 248;
    lower[31] &= 127;
    lower[31] |= 64;
    Scalar::from_bytes_mod_order(lower)
}

/// y = p + 1 = 2^255 - 18, sign bit 0: a non-canonical encoding of the identity (y = 1).
const NON_CANONICAL_IDENTITY: [u8; 32] = {
    let mut bytes = [0xff; 32];
    bytes[0] = 0xee;
    bytes[31] = 0x7f;
    bytes
};

/// Prints one ZIP-215 vector; `verdicts` are (registry, rfc8032_strict, wattle).
fn zip215(name: &str, why: &str, public_key: &[u8; 32], canonical: &[u8], signature: &[u8; 64], verdicts: [&str; 3]) {
    let [registry, strict, wattle] = verdicts;
    println!("```zip215");
    println!("name: {name}");
    println!("why: {why}");
    println!("public_key: {}", hex::encode(public_key));
    println!("canonical: {}", hex::encode(canonical));
    println!("signature: {}", hex::encode(signature));
    println!("k: {}", hex::encode(k(&signature[..32], public_key, canonical).to_bytes()));
    println!("zip215: accept");
    println!("registry: {registry}");
    println!("rfc8032_strict: {strict}");
    println!("wattle: {wattle}");
    println!("```\n");
}

fn with_s(r: &[u8; 32], s: Scalar) -> [u8; 64] {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(r);
    bytes[32..].copy_from_slice(&s.to_bytes());
    bytes
}

/// Signatures that ZIP-215 accepts and stricter RFC 8032 verifiers refuse: what tells an
/// implementer whether they implemented the acceptance rule, not just Ed25519.
fn print_zip215() {
    let secret: [u8; 32] = hex::decode(SECRET_KEYS[0]).expect("hex").try_into().expect("32 bytes");
    let a = secret_scalar(&secret);
    let public = key(0).verifying_key().to_bytes();
    let canonical = readings()[0].encode().expect("valid");

    // R is the identity, encoded non-canonically (y = p + 1); S = k·a, so S·B = R + k·A holds.
    let s = k(&NON_CANONICAL_IDENTITY, &public, &canonical) * a;
    zip215(
        "non_canonical_r",
        "R is the identity encoded as y = p + 1 (not reduced), S = k*a: ZIP-215 decodes any y, RFC 8032 requires y < p",
        &public,
        &canonical,
        &with_s(&NON_CANONICAL_IDENTITY, s),
        ["accept", "reject", "accept"],
    );

    // A is the identity encoded non-canonically; R = r·B and S = r, so [8]S·B = [8]R + [8]k·A.
    let r = Scalar::from_bytes_mod_order_wide(&sha512(&[b"wattle vector: non-canonical A"]));
    let r_point = EdwardsPoint::mul_base(&r).compress().to_bytes();
    zip215(
        "non_canonical_a",
        "A is the identity encoded as y = p + 1, R = r*B, S = r: the signature rule accepts it, the registry refuses the small-order key",
        &NON_CANONICAL_IDENTITY,
        &canonical,
        &with_s(&r_point, r),
        ["refuse", "reject", "reject"],
    );

    // A' = A + T, T of order 8: the cofactored equation holds, the cofactorless one only if
    // 8 divides k, so take the first r for which it does not.
    let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
    let mixed = (EdwardsPoint::mul_base(&a) + torsion).compress().to_bytes();
    let (r_point, s) = (0u32..)
        .find_map(|attempt| {
            let r =
                Scalar::from_bytes_mod_order_wide(&sha512(&[b"wattle vector: mixed-order A", &attempt.to_be_bytes()]));
            let r_point = EdwardsPoint::mul_base(&r).compress().to_bytes();
            let k = k(&r_point, &mixed, &canonical);
            (k * torsion != EdwardsPoint::identity()).then(|| (r_point, r + k * a))
        })
        .expect("some r gives a k that 8 does not divide");
    zip215(
        "mixed_order_a",
        "A = a*B + T, T of order 8, S = r + k*a: the cofactored equation holds, the cofactorless one does not (8 does not divide k)",
        &mixed,
        &canonical,
        &with_s(&r_point, s),
        ["accept", "reject", "accept"],
    );
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
