//! Published tariff versions in the ledger's state (issue 13): `PublishTariff` admin
//! transactions record a version's canonical JSON, validated when applied; `GET /v1/tariffs`
//! lists them. Settlement still uses the flat price (rules version 1); settling by these
//! versions comes with rules version 2.

use domain::tariff::TariffVersion;

use crate::state::{Overlay, StateRead, Table};

/// Prefix of tariff versions in the public table: `tv/{id}\0{valid_from}` → canonical JSON.
pub const TARIFF_PREFIX: &[u8] = b"tv/";

fn key_tariff(tariff: &TariffVersion) -> Vec<u8> {
    let mut key = TARIFF_PREFIX.to_vec();
    key.extend_from_slice(tariff.id.to_string().as_bytes());
    key.push(0);
    key.extend_from_slice(tariff.valid_from.format("%Y-%m-%dT%H:%M:%S").to_string().as_bytes());
    key
}

/// Applies a `PublishTariff`: refused with a reason unless the bytes are a valid tariff version
/// in canonical form, and unless no version of that id starts at the same local time.
pub(crate) fn publish(state: &mut Overlay<'_>, tariff_json: &[u8]) -> Result<(), String> {
    let tariff = TariffVersion::from_canonical_json(tariff_json).map_err(|error| format!("bad_tariff: {error}"))?;
    let key = key_tariff(&tariff);
    if state.get(Table::Public, &key).is_some() {
        return Err(format!(
            "tariff_version_exists: {} from {} is published already; publish a new version from another time",
            tariff.id, tariff.valid_from
        ));
    }
    state.put(Table::Public, key, tariff_json.to_vec());
    Ok(())
}

/// The published versions, in key order (by id, then start), from the public table's entries
/// under [`TARIFF_PREFIX`].
pub fn decode_all(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<(TariffVersion, Vec<u8>)> {
    entries
        .iter()
        .map(|(_, json)| {
            let tariff = TariffVersion::from_canonical_json(json).expect("a committed tariff version was validated");
            (tariff, json.clone())
        })
        .collect()
}
