//! Published tariff versions in the ledger's state (issue 13): `PublishTariff` admin
//! transactions record a version's canonical JSON, validated when applied; `GET /v1/tariffs`
//! lists them; rules version 2 settles bound meters by the version in force at each interval's
//! local start ([`version_at`], through the `ts/{id}` index of version starts).

use chrono::NaiveDateTime;
use domain::ids::TariffId;
use domain::tariff::TariffVersion;

use crate::state::{Overlay, StateRead, Table};

/// Prefix of tariff versions in the public table: `tv/{id}\0{valid_from}` → canonical JSON.
pub const TARIFF_PREFIX: &[u8] = b"tv/";

fn key_tariff(tariff: &TariffVersion) -> Vec<u8> {
    key_version(&tariff.id, tariff.valid_from)
}

fn key_version(id: &TariffId, from: NaiveDateTime) -> Vec<u8> {
    let mut key = TARIFF_PREFIX.to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(from.format("%Y-%m-%dT%H:%M:%S").to_string().as_bytes());
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
    let mut starts = version_starts(state, &tariff.id);
    starts.push(tariff.valid_from);
    starts.sort();
    state.put(Table::Public, key_starts(&tariff.id), serde_json::to_vec(&starts).expect("dates serialise"));
    Ok(())
}

/// Index of a tariff's versions: `ts/{id}` → JSON list of their local starts, sorted.
fn key_starts(id: &TariffId) -> Vec<u8> {
    let mut key = b"ts/".to_vec();
    key.extend_from_slice(id.as_str().as_bytes());
    key
}

fn version_starts(state: &dyn StateRead, id: &TariffId) -> Vec<NaiveDateTime> {
    state
        .get(Table::Public, &key_starts(id))
        .map(|bytes| serde_json::from_slice(&bytes).expect("a committed tariff index decodes"))
        .unwrap_or_default()
}

/// The version of tariff `id` in force at local time `local` (the latest starting at or before
/// it, if it has not ended), if any.
pub fn version_at(state: &dyn StateRead, id: &TariffId, local: NaiveDateTime) -> Option<TariffVersion> {
    let from = version_starts(state, id).into_iter().rev().find(|from| *from <= local)?;
    let tariff = version(state, id, from)?;
    tariff.valid_to.is_none_or(|to| local < to).then_some(tariff)
}

/// The version of tariff `id` starting at `from`.
pub fn version(state: &dyn StateRead, id: &TariffId, from: NaiveDateTime) -> Option<TariffVersion> {
    let bytes = state.get(Table::Public, &key_version(id, from))?;
    Some(decode_cached(bytes))
}

/// Most decoded tariff versions kept per thread (a handful are in force at once).
const DECODED_TARIFFS_MAX: usize = 64;

thread_local! {
    /// Decoded versions by their committed bytes: decoding validates and re-serialises, which
    /// dominated settling a reading. Keyed by content, so it cannot go stale or mix ledgers.
    static DECODED: std::cell::RefCell<std::collections::BTreeMap<Vec<u8>, TariffVersion>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

fn decode_cached(bytes: Vec<u8>) -> TariffVersion {
    DECODED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(tariff) = cache.get(&bytes) {
            return tariff.clone();
        }
        let tariff = TariffVersion::from_canonical_json(&bytes).expect("a committed tariff version was validated");
        if cache.len() >= DECODED_TARIFFS_MAX {
            cache.clear();
        }
        cache.insert(bytes, tariff.clone());
        tariff
    })
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
