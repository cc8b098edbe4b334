//! Who may feed the ledger: registered meters with their keys over time (`domain::keyring`),
//! registered gateways with the key they sign batches with, and revoked node keys. Part of the state machine (sans-IO):
//! configuration actions change the records, the submit path and `apply_readings` consult them.
//!
//! Gateways: until the first gateway is registered the ledger accepts batches from any gateway
//! id (every reading still needs a registered meter's signature); registering one closes the
//! registry for good, and from then on a batch needs a registered, unrevoked gateway id and a
//! batch signature under that gateway's registered key, never a key carried in the request.

use domain::codec::{DecodeError, Reader, Writer};
use domain::ids::{CustomerId, GatewayId, KeyId, MeterId, ReaderId, UnixSeconds};
use domain::keyring::{KeyRing, MeterKey};
use domain::limits::METER_KEYS_MAX;
use domain::tx::AdminAction;
use domain::verify::is_acceptable_public_key;

use crate::state::{customer_currency, Overlay, StateRead, Table};

// ---- meters -----------------------------------------------------------------------------------

/// Prefix of every meter record, for listing the registry.
pub const METER_PREFIX: &[u8] = b"m/";

pub(crate) fn key_meter(meter: &MeterId) -> Vec<u8> {
    [METER_PREFIX, meter.as_str().as_bytes()].concat()
}

/// A registered meter and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterRecord {
    pub meter_id: MeterId,
    pub customer_id: CustomerId,
    /// For an unsigned (legacy) meter: the gateway whose key (the ring's) attests its readings.
    pub attested_by: Option<GatewayId>,
    pub keys: KeyRing,
}

impl MeterRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.short_bytes(self.meter_id.as_str().as_bytes()).short_bytes(self.customer_id.as_str().as_bytes());
        match &self.attested_by {
            Some(gateway) => writer.u8(1).short_bytes(gateway.as_str().as_bytes()),
            None => writer.u8(0),
        };
        writer.u8(self.keys.keys().len() as u8);
        for key in self.keys.keys() {
            writer.u32(key.key_id.0).fixed(&key.public_key).i64(key.valid_from.0);
            match key.valid_until {
                Some(until) => writer.u8(1).i64(until.0),
                None => writer.u8(0),
            };
        }
        writer.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let meter_id = decode_text(&mut reader, "meter_id")?;
        let customer_id = decode_text(&mut reader, "customer_id")?;
        let attested_by = if reader.bool("attested")? { Some(decode_text(&mut reader, "attested_by")?) } else { None };
        let count = usize::from(reader.u8()?);
        if count > METER_KEYS_MAX {
            return Err(DecodeError::TooLarge { size: count, limit: METER_KEYS_MAX });
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let key_id = KeyId(reader.u32()?);
            let public_key = reader.array()?;
            let valid_from = UnixSeconds(reader.i64()?);
            let valid_until = if reader.bool("valid_until")? { Some(UnixSeconds(reader.i64()?)) } else { None };
            keys.push(MeterKey { key_id, public_key, valid_from, valid_until });
        }
        let keys = KeyRing::from_keys(keys).ok_or_else(|| DecodeError::invalid("keys", "windows out of order"))?;
        reader.finish()?;
        Ok(MeterRecord { meter_id, customer_id, attested_by, keys })
    }
}

fn decode_text<T: std::str::FromStr>(reader: &mut Reader<'_>, field: &'static str) -> Result<T, DecodeError>
where
    T::Err: std::fmt::Display,
{
    let raw = reader.short_bytes()?;
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::invalid(field, "not UTF-8"))?;
    text.parse().map_err(|error: T::Err| DecodeError::invalid(field, error.to_string()))
}

/// A registered meter, if any.
pub fn meter(state: &dyn StateRead, meter_id: &MeterId) -> Option<MeterRecord> {
    state.get(Table::Private, &key_meter(meter_id)).map(|bytes| match MeterRecord::decode(&bytes) {
        Ok(record) => record,
        Err(error) => panic!("committed meter record does not decode: {error}"),
    })
}

/// Registers a meter with its first key. Registering it again with the same newest key may
/// change its customer or attestation; another key is refused: keys change by rotation, so the
/// windows of earlier keys (and backfill signed with them) survive.
fn register_meter(
    state: &mut Overlay<'_>,
    meter_id: &MeterId,
    (key_id, public_key): (KeyId, [u8; 32]),
    customer_id: &CustomerId,
    attested_by: Option<GatewayId>,
) -> Result<(), String> {
    if !is_acceptable_public_key(&public_key) {
        return Err("weak_key: not a valid, non-small-order Ed25519 key".into());
    }
    if customer_currency(state, customer_id).is_none() {
        return Err(format!("unknown_customer: {customer_id}"));
    }
    let keys = match meter(state, meter_id) {
        None => KeyRing::first(key_id, public_key),
        Some(existing) => {
            let newest = existing.keys.newest();
            if newest.key_id != key_id || newest.public_key != public_key {
                return Err(format!(
                    "meter_registered: {meter_id} has key {} registered; give it a new key with rotate_meter_key",
                    newest.key_id.0
                ));
            }
            existing.keys
        }
    };
    let record = MeterRecord { meter_id: meter_id.clone(), customer_id: customer_id.clone(), attested_by, keys };
    state.put(Table::Private, key_meter(meter_id), record.encode());
    Ok(())
}

fn change_keys(
    state: &mut Overlay<'_>,
    meter_id: &MeterId,
    change: impl FnOnce(&mut KeyRing) -> Result<(), domain::keyring::KeyChangeError>,
) -> Result<(), String> {
    let mut record = meter(state, meter_id).ok_or_else(|| format!("unknown_meter: {meter_id}"))?;
    change(&mut record.keys).map_err(|error| error.to_string())?;
    state.put(Table::Private, key_meter(meter_id), record.encode());
    Ok(())
}

// ---- gateways ---------------------------------------------------------------------------------

/// Set once the first gateway is registered: from then on batches need a registered gateway.
const KEY_GATEWAYS_CLOSED: &[u8] = b"gateways_closed";
/// Prefix of gateway records: `gw/{gateway id}` → status byte (1 registered, 0 revoked) and key.
/// (Not `g/`: governance's records live there, and a gateway named `started` would be its flag.)
pub const GATEWAY_PREFIX: &[u8] = b"gw/";

fn key_gateway(gateway: &GatewayId) -> Vec<u8> {
    [GATEWAY_PREFIX, gateway.as_str().as_bytes()].concat()
}

/// A gateway's standing with the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayStanding {
    /// No gateway registered yet: any gateway id may submit (meter signatures still checked).
    RegistryOpen,
    /// Registered and not revoked: batches must be signed with this key.
    Registered([u8; 32]),
    Revoked,
    Unregistered,
}

/// Whether the gateway registry is closed (a gateway was registered once).
pub fn gateways_closed(state: &dyn StateRead) -> bool {
    state.get(Table::Public, KEY_GATEWAYS_CLOSED).is_some()
}

/// How the ledger stands to `gateway_id`.
pub fn gateway_standing(state: &dyn StateRead, gateway_id: &GatewayId) -> GatewayStanding {
    if !gateways_closed(state) {
        return GatewayStanding::RegistryOpen;
    }
    match state.get(Table::Public, &key_gateway(gateway_id)) {
        None => GatewayStanding::Unregistered,
        Some(bytes) if bytes.first() == Some(&1) && bytes.len() == 33 => {
            GatewayStanding::Registered(bytes[1..].try_into().expect("33 bytes: status and key"))
        }
        Some(_) => GatewayStanding::Revoked,
    }
}

/// Decodes a gateway record listed under [`GATEWAY_PREFIX`]: its key, and whether it is revoked.
pub fn decode_gateway(value: &[u8]) -> Option<([u8; 32], bool)> {
    let key: [u8; 32] = value.get(1..33)?.try_into().ok()?;
    Some((key, value[0] == 0))
}

fn register_gateway(state: &mut Overlay<'_>, gateway_id: &GatewayId, public_key: &[u8; 32]) -> Result<(), String> {
    if !is_acceptable_public_key(public_key) {
        return Err("weak_key: not a valid, non-small-order Ed25519 key".into());
    }
    if gateway_standing(state, gateway_id) == GatewayStanding::Revoked {
        return Err(format!("gateway_revoked: {gateway_id} was revoked; register the gateway under a new id"));
    }
    state.put(Table::Public, KEY_GATEWAYS_CLOSED.to_vec(), vec![1]);
    state.put(Table::Public, key_gateway(gateway_id), [[1].as_slice(), public_key].concat());
    Ok(())
}

fn revoke_gateway(state: &mut Overlay<'_>, gateway_id: &GatewayId) -> Result<(), String> {
    let GatewayStanding::Registered(key) = gateway_standing(state, gateway_id) else {
        return Err(format!("unknown_gateway: {gateway_id} is not a registered gateway"));
    };
    state.put(Table::Public, key_gateway(gateway_id), [[0].as_slice(), &key].concat());
    Ok(())
}

// ---- nodes ------------------------------------------------------------------------------------

/// Prefix of node key revocations: `rn/{node id: 8 bytes}{node key}` → empty. (Endorsements are
/// `n/{node id}{node key}` in the same table.)
pub const REVOKED_NODE_PREFIX: &[u8] = b"rn/";

fn key_revoked_node(node_id: u64, node_key: &[u8; 32]) -> Vec<u8> {
    [REVOKED_NODE_PREFIX, &node_id.to_be_bytes(), node_key].concat()
}

/// Whether governance revoked this node key's endorsement.
pub fn node_revoked(state: &dyn StateRead, node_id: u64, node_key: &[u8; 32]) -> bool {
    state.get(Table::Public, &key_revoked_node(node_id, node_key)).is_some()
}

/// Decodes a key listed under [`REVOKED_NODE_PREFIX`] into (node id, node key).
pub fn decode_revoked_node(key: &[u8]) -> Option<(u64, [u8; 32])> {
    let rest = key.strip_prefix(REVOKED_NODE_PREFIX)?;
    let (id, node_key) = rest.split_at_checked(8)?;
    Some((u64::from_be_bytes(id.try_into().ok()?), node_key.try_into().ok()?))
}

/// Accepted code measurements (`attestation.rs`): `am/{measurement}` → 1 accepted, 0 revoked.
pub const MEASUREMENT_PREFIX: &[u8] = b"am/";
/// Set by the first accepted measurement: from then on only accepted ones join.
const KEY_MEASUREMENTS_CLOSED: &[u8] = b"measurements_closed";

fn key_measurement(measurement: &[u8; 32]) -> Vec<u8> {
    [MEASUREMENT_PREFIX, measurement.as_slice()].concat()
}

/// Whether a node attesting `measurement` may be handed the secrets by a node running `own`:
/// while governance has accepted no measurement (a new service) only a node running the very
/// same build as the one answering; from the first accepted one on, only accepted measurements
/// that were not revoked (the answering node's own included: a revoked build hands nothing on).
pub fn measurement_accepted(state: &dyn StateRead, measurement: &[u8; 32], own: &[u8; 32]) -> bool {
    match state.get(Table::Public, KEY_MEASUREMENTS_CLOSED) {
        None => measurement == own,
        Some(_) => state.get(Table::Public, &key_measurement(measurement)).is_some_and(|value| value == [1]),
    }
}

/// The accepted measurements.
pub fn accepted_measurements(store: &crate::store::Store) -> Vec<[u8; 32]> {
    store
        .scan_prefix(Table::Public, MEASUREMENT_PREFIX)
        .into_iter()
        .filter(|(_, value)| value == &[1])
        .filter_map(|(key, _)| key[MEASUREMENT_PREFIX.len()..].try_into().ok())
        .collect()
}

// ---- readers ----------------------------------------------------------------------------------

/// Prefix of reader records (`client_auth.rs`): `rd/{reader id}` → status byte (1 registered,
/// 0 revoked) and key.
pub const READER_PREFIX: &[u8] = b"rd/";

fn key_reader(reader: &ReaderId) -> Vec<u8> {
    [READER_PREFIX, reader.as_str().as_bytes()].concat()
}

/// Among the reader records listed under [`READER_PREFIX`], the registered and unrevoked one
/// whose key is `public_key`, by id.
pub fn reader_with_key(readers: &[(Vec<u8>, Vec<u8>)], public_key: &[u8; 32]) -> Option<String> {
    readers.iter().find_map(|(key, value)| {
        (value.first() == Some(&1) && value.get(1..33) == Some(public_key.as_slice()))
            .then(|| String::from_utf8_lossy(&key[READER_PREFIX.len()..]).into_owned())
    })
}

fn register_reader(state: &mut Overlay<'_>, reader_id: &ReaderId, public_key: &[u8; 32]) -> Result<(), String> {
    if !is_acceptable_public_key(public_key) {
        return Err("weak_key: not a valid, non-small-order Ed25519 key".into());
    }
    state.put(Table::Public, key_reader(reader_id), [[1].as_slice(), public_key].concat());
    Ok(())
}

fn revoke_reader(state: &mut Overlay<'_>, reader_id: &ReaderId) -> Result<(), String> {
    match state.get(Table::Public, &key_reader(reader_id)) {
        Some(value) if value.first() == Some(&1) && value.len() == 33 => {
            state.put(Table::Public, key_reader(reader_id), [[0].as_slice(), &value[1..]].concat());
            Ok(())
        }
        _ => Err(format!("unknown_reader: {reader_id} is not a registered reader")),
    }
}

/// Carries out the registry's configuration actions; `None` for an action of another kind.
pub(crate) fn execute(state: &mut Overlay<'_>, action: &AdminAction) -> Option<Result<(), String>> {
    Some(match action {
        AdminAction::RegisterMeter { meter_id, key_id, public_key, customer_id } => {
            register_meter(state, meter_id, (*key_id, *public_key), customer_id, None)
        }
        AdminAction::RegisterAttestedMeter { meter_id, gateway_id, key_id, gateway_key, customer_id } => {
            register_meter(state, meter_id, (*key_id, *gateway_key), customer_id, Some(gateway_id.clone()))
        }
        AdminAction::RotateMeterKey { meter_id, key_id, public_key, effective_from } => {
            if !is_acceptable_public_key(public_key) {
                return Some(Err("weak_key: not a valid, non-small-order Ed25519 key".into()));
            }
            change_keys(state, meter_id, |ring| ring.rotate(*key_id, *public_key, *effective_from))
        }
        AdminAction::RevokeMeterKey { meter_id, key_id, from } => {
            change_keys(state, meter_id, |ring| ring.revoke(*key_id, *from))
        }
        AdminAction::RegisterGateway { gateway_id, public_key } => register_gateway(state, gateway_id, public_key),
        AdminAction::RevokeGateway { gateway_id } => revoke_gateway(state, gateway_id),
        AdminAction::RevokeNode { node_id, node_key } => {
            state.put(Table::Public, key_revoked_node(*node_id, node_key), Vec::new());
            Ok(())
        }
        AdminAction::AcceptMeasurement { measurement } => {
            state.put(Table::Public, KEY_MEASUREMENTS_CLOSED.to_vec(), vec![1]);
            state.put(Table::Public, key_measurement(measurement), vec![1]);
            Ok(())
        }
        AdminAction::RevokeMeasurement { measurement } => {
            if state.get(Table::Public, &key_measurement(measurement)).is_none_or(|value| value != [1]) {
                return Some(Err(format!("unknown_measurement: {} is not accepted", hex::encode(measurement))));
            }
            state.put(Table::Public, key_measurement(measurement), vec![0]);
            Ok(())
        }
        AdminAction::RegisterReader { reader_id, public_key } => register_reader(state, reader_id, public_key),
        AdminAction::RevokeReader { reader_id } => revoke_reader(state, reader_id),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::EmptyState as Empty;

    /// Found while testing node revocation: revocations first lived under `n/`, where
    /// endorsements are, so every endorsed node read as revoked; gateways under `g/`, where
    /// governance is, so a gateway named `started` made an ungoverned ledger look governed.
    #[test]
    fn registry_records_share_no_key_with_governance_or_endorsements() {
        let base = Empty;
        let mut state = Overlay::new(&base);
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes();
        for gateway in ["started", "c", "count", "members"] {
            let gateway_id = GatewayId::new(gateway).expect("a valid id");
            execute(&mut state, &AdminAction::RegisterGateway { gateway_id, public_key: key })
                .expect("some")
                .expect("ok");
        }
        assert!(!crate::governance::is_governed(&state), "a gateway's record read as governance's");
        // An endorsement of node 1's key, where the state machine writes endorsements.
        state.put(Table::Public, crate::state::key_endorsement(1, &key), vec![0u8; 64]);
        assert!(!node_revoked(&state, 1, &key), "an endorsement read as a revocation");
        execute(&mut state, &AdminAction::RevokeNode { node_id: 1, node_key: key }).expect("some").expect("ok");
        assert!(node_revoked(&state, 1, &key));
    }
}
