//! Ledger transactions and their canonical codec. Every raft entry's application payload is one
//! [`Transaction`]; its bytes are what the Merkle tree will hash, so they never come from serde.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{CustomerId, GatewayId, KeyId, MemberId, MeterId, ReaderId, TxId, UnixMillis, UnixSeconds};
use crate::limits::{
    BATCH_READINGS_MAX, BINDING_JSON_BYTES_MAX, CREDIT_ORDER_JSON_BYTES_MAX, GOV_DOCUMENT_JSON_BYTES_MAX,
    PRICE_SERIES_JSON_BYTES_MAX, READING_BYTES, TARIFF_JSON_BYTES_MAX, TRANSACTION_BYTES_MAX,
};
use crate::money::{Currency, UnitPrice};
use crate::reading::SignedReading;
use crate::verify::{verify_signature, SignatureError, VerifiedReading};

/// Version of the transaction encoding.
pub const TX_VERSION: u8 = 1;
/// Domain-separation tag of the bytes an operator signs for an admin action.
pub const ADMIN_TAG: &[u8; 13] = b"wattle.admin\0";
/// Domain-separation tag of an admin transaction's id ([`SignedAdmin::tx_id`]).
pub const ADMIN_TX_ID_TAG: &[u8; 16] = b"wattle.admin-id\0";

/// One ledger transaction, as proposed by the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Application transaction id (openraft returns no log id before commit).
    pub tx_id: TxId,
    /// The settlement rules version that executes this transaction.
    pub rules_version: u32,
    /// Leader-stamped time; the state machine never reads a clock.
    pub time: UnixMillis,
    pub body: TxBody,
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxBody {
    /// A configuration change signed by the operator key (until governance starts).
    Admin(SignedAdmin),
    /// Meter readings whose signatures the leader verified.
    Readings(ReadingBatch),
    /// Leader-stamped time only: drives deadlines.
    Tick,
    /// Step one of a signature: every node takes the Merkle root when it applies this entry.
    SignatureMarker,
    /// Step two: the leader's signature over the root at a marker; every node checks it against
    /// its own root and stops on a mismatch.
    Signature(RootSignature),
    /// A member's proposal, ballot or withdrawal (issue 14), checked and decided on apply.
    Gov(crate::gov::SignedGov),
    /// Issues the invoice of a customer's closed period (proposed by the leader after the close;
    /// applying it assigns the issuer's next number; its claims document is the invoice).
    IssueInvoice { customer: crate::ids::PartyId, period_start: crate::ids::UnixSeconds },
    /// Issues the credit note of a decided credit order (`CreditInvoice`, numbered by the ledger
    /// in decision order); its claims document is the credit note.
    IssueCreditNote { customer: crate::ids::PartyId, order: u64 },
    /// The next version of the ledger secret, after governance voted a rotation
    /// (`RotateLedgerSecret`). `sealed` is the *previous* version's 32 bytes sealed (AES-256-GCM)
    /// under the new one, bound to `version` (as CCF keeps past ledger secrets): the new secret
    /// itself is never in the log; nodes get it from the leader, which draws it, over the secret
    /// handover (wrapped for each node's X25519 key), and recognise it by opening `sealed`.
    RotateSecret { version: u32, sealed: [u8; ROTATION_SEALED_BYTES] },
}

/// Bytes of a rotation's sealed previous secret: version (4), nonce (12), the secret (32), the
/// tag (16).
pub const ROTATION_SEALED_BYTES: usize = 64;

/// A node's signature over the Merkle root of the first `marker_index + 1` log entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSignature {
    pub marker_index: u64,
    pub root: [u8; 32],
    pub node_id: u64,
    pub node_key: [u8; 32],
    pub signature: [u8; 64],
    /// When the node signed (ms since the Unix epoch): the signature transaction's time, which
    /// the signature covers so a receipt can show the key was endorsed then. `None` in
    /// signatures made before signing times existed (body tag 5; tag 9 carries the time).
    pub signed_at: Option<i64>,
}

impl RootSignature {
    /// Signs the root of a tree of `marker_index + 1` leaves at `signed_at`.
    pub fn sign(marker_index: u64, root: [u8; 32], node_id: u64, key: &SigningKey, signed_at: Option<i64>) -> Self {
        let message = crate::receipt::root_message_at(marker_index + 1, &root, signed_at);
        RootSignature {
            marker_index,
            root,
            node_id,
            node_key: key.verifying_key().to_bytes(),
            signature: key.sign(&message).to_bytes(),
            signed_at,
        }
    }

    /// Checks the signature under the key it names (not whether that key is endorsed).
    pub fn verify(&self) -> Result<(), SignatureError> {
        let message = crate::receipt::root_message_at(self.marker_index + 1, &self.root, self.signed_at);
        verify_signature(&self.node_key, &self.signature, &message)
    }
}

/// Readings forwarded by one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingBatch {
    pub gateway_id: GatewayId,
    pub readings: Vec<BatchReading>,
}

/// One reading in a batch, with its envelope's backfill mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReading {
    pub reading: VerifiedReading,
    pub backfill: bool,
}

/// A configuration change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAction {
    RegisterCustomer {
        customer_id: CustomerId,
        currency: Currency,
    },
    RegisterMeter {
        meter_id: MeterId,
        key_id: KeyId,
        public_key: [u8; 32],
        customer_id: CustomerId,
    },
    SetFlatPrice(UnitPrice),
    /// Add a ledger node as a learner (it replicates but does not vote yet).
    AddNode {
        node_id: u64,
        address: String,
    },
    /// Make exactly these nodes the voters.
    SetVoters {
        voters: Vec<u64>,
    },
    /// Record a node's signing key with the service key's endorsement of it (receipts carry
    /// both), for a validity period when given (tag 25; tag 6 without one: valid until
    /// revoked). The first endorsement pins the service key.
    EndorseNode {
        node_id: u64,
        node_key: [u8; 32],
        service_key: [u8; 32],
        endorsement: [u8; 64],
        validity: Option<crate::receipt::Validity>,
    },
    /// Register an unsigned (legacy) meter whose readings a gateway attests: they are signed by
    /// that gateway's key, registered here as the meter's key, and marked as attested.
    RegisterAttestedMeter {
        meter_id: MeterId,
        gateway_id: GatewayId,
        key_id: KeyId,
        gateway_key: [u8; 32],
        customer_id: CustomerId,
    },
    /// Publish a tariff version (issue 13): its canonical JSON (`domain::tariff`,
    /// docs/tariffs.md), validated when applied. Today it is recorded and listed; settling by it
    /// comes with rules version 2. Governance will vote on this same action.
    PublishTariff {
        /// `TariffVersion::to_canonical_json`, at most `TARIFF_JSON_BYTES_MAX` bytes.
        tariff_json: Vec<u8>,
    },
    /// Bind a meter to a customer's supply point under a tariff over a local validity window
    /// (issue 13): `settle::Binding::to_canonical_json`. A binding of the same meter and start
    /// with another end replaces the one recorded (a move-out or exchange ends an open binding).
    Bind {
        /// At most `BINDING_JSON_BYTES_MAX` bytes.
        binding_json: Vec<u8>,
    },
    /// Publish a dynamic tariff's prices per 15-minute interval (`tariff::PriceSeries`, canonical
    /// JSON): its own transaction, as a day-ahead market publishes them.
    PublishPrices {
        /// At most `PRICE_SERIES_JSON_BYTES_MAX` bytes.
        prices_json: Vec<u8>,
    },
    /// Hand the ledger to its consortium (issue 14): the founding members and the constitution
    /// (`gov::Genesis`, canonical JSON). The last admin transaction the operator key may sign;
    /// from then on every change is a voted proposal.
    StartGovernance {
        /// At most `GOV_DOCUMENT_JSON_BYTES_MAX` bytes.
        genesis_json: Vec<u8>,
    },
    /// Admit a member (`gov::Member`, canonical JSON). Governed only.
    AddMember {
        member_json: Vec<u8>,
    },
    /// Remove a member; refused if a rule of the constitution could then never pass. Governed only.
    RemoveMember {
        member_id: MemberId,
    },
    /// Replace the constitution (`gov::Constitution`, canonical JSON); it decides the proposals
    /// made after it. Governed only.
    SetConstitution {
        constitution_json: Vec<u8>,
    },
    /// Give a registered meter a new key for the intervals from `effective_from` on (aligned to
    /// the 15-minute grid); its newest key then signs only the intervals before (`keyring`).
    RotateMeterKey {
        meter_id: MeterId,
        key_id: KeyId,
        public_key: [u8; 32],
        effective_from: UnixSeconds,
    },
    /// End a meter key's window at `from`: readings of intervals from then on signed with it are
    /// refused; settled readings stay.
    RevokeMeterKey {
        meter_id: MeterId,
        key_id: KeyId,
        from: UnixSeconds,
    },
    /// Register a gateway and the key it signs its batches with. Once any gateway is registered
    /// the ledger accepts batches only from registered gateways, signed with their registered key.
    RegisterGateway {
        gateway_id: GatewayId,
        public_key: [u8; 32],
    },
    /// Revoke a gateway: its batches are refused from now on.
    RevokeGateway {
        gateway_id: GatewayId,
    },
    /// Revoke a node key's endorsement: peers refuse its raft requests, and `wattle receipt
    /// verify --ledger` refuses receipts it signed.
    RevokeNode {
        node_id: u64,
        node_key: [u8; 32],
    },
    /// Accept a code measurement (`ledger/src/attestation.rs`): a node attesting it may be
    /// handed the ledger secrets and join. Until the first is accepted, any admitted node may.
    AcceptMeasurement {
        measurement: [u8; 32],
    },
    /// Withdraw an accepted measurement: nodes attesting it are handed the secrets no more.
    RevokeMeasurement {
        measurement: [u8; 32],
    },
    /// Register a service that may read every customer's private data (billing), by its key
    /// (`ledger/src/client_auth.rs`). Registering an id again replaces its key.
    RegisterReader {
        reader_id: ReaderId,
        public_key: [u8; 32],
    },
    /// Revoke a reader: its requests are refused from now on.
    RevokeReader {
        reader_id: ReaderId,
    },
    /// Credit an issued invoice, in part or whole (void, with or without reissue): a
    /// `settle::CreditOrder`, canonical JSON. The ledger then issues the credit note in its own
    /// transaction (`IssueCreditNote`).
    CreditInvoice {
        /// At most `CREDIT_ORDER_JSON_BYTES_MAX` bytes.
        order_json: Vec<u8>,
    },
    /// Rotate the ledger secret: the leader draws the next version and proposes it
    /// (`TxBody::RotateSecret`); values sealed from then on use it, older ones keep opening.
    RotateLedgerSecret,
}

/// Longest node address in an admin action.
pub const NODE_ADDRESS_BYTES_MAX: usize = 255;
/// Most voters a consortium ledger runs with (raft clusters larger than this only slow commits).
pub const VOTERS_MAX: usize = 9;

/// An admin action signed by the operator key. `nonce` must exceed every earlier admin nonce,
/// so a replayed action is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAdmin {
    pub nonce: u64,
    pub action: AdminAction,
    pub operator_key: [u8; 32],
    pub signature: [u8; 64],
}

impl SignedAdmin {
    /// Signs `action` with the operator key.
    pub fn sign(nonce: u64, action: AdminAction, key: &SigningKey) -> Self {
        let signature = key.sign(&admin_message(nonce, &action)).to_bytes();
        SignedAdmin { nonce, action, operator_key: key.verifying_key().to_bytes(), signature }
    }
    /// Canonical bytes of the signed action (as inside a transaction).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        self.encode(&mut writer);
        writer.finish()
    }

    /// Decodes [`SignedAdmin::to_bytes`]; rejects trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let admin = Self::decode(&mut reader)?;
        reader.finish()?;
        Ok(admin)
    }

    fn encode(&self, writer: &mut Writer) {
        writer.u64(self.nonce);
        self.action.encode(writer);
        writer.fixed(&self.operator_key).fixed(&self.signature);
    }

    fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let nonce = reader.u64()?;
        let action = AdminAction::decode(reader)?;
        Ok(SignedAdmin { nonce, action, operator_key: reader.array()?, signature: reader.array()? })
    }

    /// Checks the signature (not whether the key is the ledger's operator key).
    pub fn verify(&self) -> Result<(), SignatureError> {
        verify_signature(&self.operator_key, &self.signature, &admin_message(self.nonce, &self.action))
    }

    /// The id of the transaction that carries this admin action, derived from its signed bytes
    /// (SHA-256 over [`ADMIN_TX_ID_TAG`] and [`SignedAdmin::to_bytes`], first 16 bytes). Ed25519
    /// signing is deterministic, so a retry, even re-signed, carries the same id and the ledger
    /// recognises it as the transaction already applied rather than refusing its nonce as stale.
    pub fn tx_id(&self) -> TxId {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new().chain_update(ADMIN_TX_ID_TAG).chain_update(self.to_bytes()).finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        TxId(id)
    }
}

fn admin_message(nonce: u64, action: &AdminAction) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.fixed(ADMIN_TAG).u64(nonce);
    action.encode(&mut writer);
    writer.finish()
}

impl AdminAction {
    pub(crate) fn encode(&self, writer: &mut Writer) {
        match self {
            AdminAction::RegisterCustomer { customer_id, currency } => {
                writer.u8(1).short_bytes(customer_id.as_str().as_bytes());
                currency.encode(writer);
            }
            AdminAction::RegisterMeter { meter_id, key_id, public_key, customer_id } => {
                writer
                    .u8(2)
                    .short_bytes(meter_id.as_str().as_bytes())
                    .u32(key_id.0)
                    .fixed(public_key)
                    .short_bytes(customer_id.as_str().as_bytes());
            }
            AdminAction::SetFlatPrice(price) => {
                writer.u8(3);
                price.encode(writer);
            }
            AdminAction::AddNode { node_id, address } => {
                assert!(address.len() <= NODE_ADDRESS_BYTES_MAX, "node address over NODE_ADDRESS_BYTES_MAX");
                writer.u8(4).u64(*node_id).short_bytes(address.as_bytes());
            }
            AdminAction::SetVoters { voters } => {
                assert!(voters.len() <= VOTERS_MAX, "more than VOTERS_MAX voters");
                writer.u8(5).u8(voters.len() as u8);
                for voter in voters {
                    writer.u64(*voter);
                }
            }
            AdminAction::RegisterAttestedMeter { meter_id, gateway_id, key_id, gateway_key, customer_id } => {
                writer
                    .u8(7)
                    .short_bytes(meter_id.as_str().as_bytes())
                    .short_bytes(gateway_id.as_str().as_bytes())
                    .u32(key_id.0)
                    .fixed(gateway_key)
                    .short_bytes(customer_id.as_str().as_bytes());
            }
            AdminAction::EndorseNode { node_id, node_key, service_key, endorsement, validity } => {
                writer
                    .u8(if validity.is_some() { 25 } else { 6 })
                    .u64(*node_id)
                    .fixed(node_key)
                    .fixed(service_key)
                    .fixed(endorsement);
                if let Some(period) = validity {
                    writer.i64(period.not_before).i64(period.not_after);
                }
            }
            AdminAction::PublishTariff { tariff_json } => {
                assert!(tariff_json.len() <= TARIFF_JSON_BYTES_MAX, "tariff over TARIFF_JSON_BYTES_MAX");
                writer.u8(8).long_bytes(tariff_json);
            }
            AdminAction::Bind { binding_json } => {
                assert!(binding_json.len() <= BINDING_JSON_BYTES_MAX, "binding over BINDING_JSON_BYTES_MAX");
                writer.u8(9).long_bytes(binding_json);
            }
            AdminAction::PublishPrices { prices_json } => {
                assert!(prices_json.len() <= PRICE_SERIES_JSON_BYTES_MAX, "prices over PRICE_SERIES_JSON_BYTES_MAX");
                writer.u8(10).long_bytes(prices_json);
            }
            AdminAction::StartGovernance { genesis_json } => {
                assert!(genesis_json.len() <= GOV_DOCUMENT_JSON_BYTES_MAX, "genesis over GOV_DOCUMENT_JSON_BYTES_MAX");
                writer.u8(11).long_bytes(genesis_json);
            }
            AdminAction::AddMember { member_json } => {
                assert!(member_json.len() <= GOV_DOCUMENT_JSON_BYTES_MAX, "member over GOV_DOCUMENT_JSON_BYTES_MAX");
                writer.u8(12).long_bytes(member_json);
            }
            AdminAction::RemoveMember { member_id } => {
                writer.u8(13).short_bytes(member_id.as_str().as_bytes());
            }
            AdminAction::SetConstitution { constitution_json } => {
                assert!(
                    constitution_json.len() <= GOV_DOCUMENT_JSON_BYTES_MAX,
                    "constitution over GOV_DOCUMENT_JSON_BYTES_MAX"
                );
                writer.u8(14).long_bytes(constitution_json);
            }
            AdminAction::RotateMeterKey { meter_id, key_id, public_key, effective_from } => {
                writer
                    .u8(15)
                    .short_bytes(meter_id.as_str().as_bytes())
                    .u32(key_id.0)
                    .fixed(public_key)
                    .i64(effective_from.0);
            }
            AdminAction::RevokeMeterKey { meter_id, key_id, from } => {
                writer.u8(16).short_bytes(meter_id.as_str().as_bytes()).u32(key_id.0).i64(from.0);
            }
            AdminAction::RegisterGateway { gateway_id, public_key } => {
                writer.u8(17).short_bytes(gateway_id.as_str().as_bytes()).fixed(public_key);
            }
            AdminAction::RevokeGateway { gateway_id } => {
                writer.u8(18).short_bytes(gateway_id.as_str().as_bytes());
            }
            AdminAction::RevokeNode { node_id, node_key } => {
                writer.u8(19).u64(*node_id).fixed(node_key);
            }
            AdminAction::AcceptMeasurement { measurement } => {
                writer.u8(20).fixed(measurement);
            }
            AdminAction::RevokeMeasurement { measurement } => {
                writer.u8(21).fixed(measurement);
            }
            AdminAction::RegisterReader { reader_id, public_key } => {
                writer.u8(22).short_bytes(reader_id.as_str().as_bytes()).fixed(public_key);
            }
            AdminAction::RevokeReader { reader_id } => {
                writer.u8(23).short_bytes(reader_id.as_str().as_bytes());
            }
            AdminAction::CreditInvoice { order_json } => {
                assert!(
                    order_json.len() <= CREDIT_ORDER_JSON_BYTES_MAX,
                    "credit order over CREDIT_ORDER_JSON_BYTES_MAX"
                );
                writer.u8(24).long_bytes(order_json);
            }
            AdminAction::RotateLedgerSecret => {
                writer.u8(26);
            }
        }
    }
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8()? {
            1 => Ok(AdminAction::RegisterCustomer {
                customer_id: decode_id(reader, "customer_id")?,
                currency: Currency::decode(reader)?,
            }),
            2 => Ok(AdminAction::RegisterMeter {
                meter_id: decode_id(reader, "meter_id")?,
                key_id: KeyId(reader.u32()?),
                public_key: reader.array()?,
                customer_id: decode_id(reader, "customer_id")?,
            }),
            3 => Ok(AdminAction::SetFlatPrice(UnitPrice::decode(reader)?)),
            4 => {
                let node_id = reader.u64()?;
                let address = std::str::from_utf8(reader.short_bytes()?)
                    .map_err(|_| DecodeError::invalid("address", "not UTF-8"))?
                    .to_string();
                Ok(AdminAction::AddNode { node_id, address })
            }
            5 => {
                let count = usize::from(reader.u8()?);
                if count > VOTERS_MAX {
                    return Err(DecodeError::TooLarge { size: count, limit: VOTERS_MAX });
                }
                Ok(AdminAction::SetVoters { voters: (0..count).map(|_| reader.u64()).collect::<Result<_, _>>()? })
            }
            tag @ (6 | 25) => Ok(AdminAction::EndorseNode {
                node_id: reader.u64()?,
                node_key: reader.array()?,
                service_key: reader.array()?,
                endorsement: reader.array()?,
                validity: if tag == 25 {
                    Some(crate::receipt::Validity { not_before: reader.i64()?, not_after: reader.i64()? })
                } else {
                    None
                },
            }),
            7 => Ok(AdminAction::RegisterAttestedMeter {
                meter_id: decode_id(reader, "meter_id")?,
                gateway_id: decode_id(reader, "gateway_id")?,
                key_id: KeyId(reader.u32()?),
                gateway_key: reader.array()?,
                customer_id: decode_id(reader, "customer_id")?,
            }),
            8 => Ok(AdminAction::PublishTariff { tariff_json: reader.long_bytes(TARIFF_JSON_BYTES_MAX)?.to_vec() }),
            9 => Ok(AdminAction::Bind { binding_json: reader.long_bytes(BINDING_JSON_BYTES_MAX)?.to_vec() }),
            10 => {
                Ok(AdminAction::PublishPrices { prices_json: reader.long_bytes(PRICE_SERIES_JSON_BYTES_MAX)?.to_vec() })
            }
            11 => Ok(AdminAction::StartGovernance {
                genesis_json: reader.long_bytes(GOV_DOCUMENT_JSON_BYTES_MAX)?.to_vec(),
            }),
            12 => Ok(AdminAction::AddMember { member_json: reader.long_bytes(GOV_DOCUMENT_JSON_BYTES_MAX)?.to_vec() }),
            13 => Ok(AdminAction::RemoveMember { member_id: decode_id(reader, "member_id")? }),
            14 => Ok(AdminAction::SetConstitution {
                constitution_json: reader.long_bytes(GOV_DOCUMENT_JSON_BYTES_MAX)?.to_vec(),
            }),
            15 => Ok(AdminAction::RotateMeterKey {
                meter_id: decode_id(reader, "meter_id")?,
                key_id: KeyId(reader.u32()?),
                public_key: reader.array()?,
                effective_from: UnixSeconds(reader.i64()?),
            }),
            16 => Ok(AdminAction::RevokeMeterKey {
                meter_id: decode_id(reader, "meter_id")?,
                key_id: KeyId(reader.u32()?),
                from: UnixSeconds(reader.i64()?),
            }),
            17 => Ok(AdminAction::RegisterGateway {
                gateway_id: decode_id(reader, "gateway_id")?,
                public_key: reader.array()?,
            }),
            18 => Ok(AdminAction::RevokeGateway { gateway_id: decode_id(reader, "gateway_id")? }),
            19 => Ok(AdminAction::RevokeNode { node_id: reader.u64()?, node_key: reader.array()? }),
            20 => Ok(AdminAction::AcceptMeasurement { measurement: reader.array()? }),
            21 => Ok(AdminAction::RevokeMeasurement { measurement: reader.array()? }),
            22 => Ok(AdminAction::RegisterReader {
                reader_id: decode_id(reader, "reader_id")?,
                public_key: reader.array()?,
            }),
            23 => Ok(AdminAction::RevokeReader { reader_id: decode_id(reader, "reader_id")? }),
            24 => {
                Ok(AdminAction::CreditInvoice { order_json: reader.long_bytes(CREDIT_ORDER_JSON_BYTES_MAX)?.to_vec() })
            }
            26 => Ok(AdminAction::RotateLedgerSecret),
            other => Err(DecodeError::invalid("admin_action", format!("unknown kind {other}"))),
        }
    }
}

fn decode_id<T: std::str::FromStr<Err = crate::ids::IdError>>(
    reader: &mut Reader<'_>,
    field: &'static str,
) -> Result<T, DecodeError> {
    let raw = reader.short_bytes()?;
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::invalid(field, "not UTF-8"))?;
    text.parse().map_err(|error: crate::ids::IdError| DecodeError::invalid(field, error.to_string()))
}

impl Transaction {
    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(TX_VERSION).fixed(&self.tx_id.0).u32(self.rules_version).i64(self.time.0);
        match &self.body {
            TxBody::Admin(admin) => {
                writer.u8(1);
                admin.encode(&mut writer);
            }
            TxBody::Readings(batch) => {
                assert!(
                    batch.readings.len() <= BATCH_READINGS_MAX,
                    "batch over BATCH_READINGS_MAX built by the leader"
                );
                writer.u8(2).short_bytes(batch.gateway_id.as_str().as_bytes()).u32(batch.readings.len() as u32);
                for item in &batch.readings {
                    let signed = item.reading.signed();
                    writer.fixed(signed.bytes()).fixed(signed.signature()).u8(u8::from(item.backfill));
                }
            }
            TxBody::Tick => {
                writer.u8(3);
            }
            TxBody::SignatureMarker => {
                writer.u8(4);
            }
            TxBody::Signature(signed) => {
                writer
                    .u8(if signed.signed_at.is_some() { 9 } else { 5 })
                    .u64(signed.marker_index)
                    .fixed(&signed.root)
                    .u64(signed.node_id)
                    .fixed(&signed.node_key)
                    .fixed(&signed.signature);
                if let Some(at) = signed.signed_at {
                    writer.i64(at);
                }
            }
            TxBody::Gov(gov) => {
                writer.u8(6);
                gov.encode(&mut writer);
            }
            TxBody::IssueInvoice { customer, period_start } => {
                writer.u8(7).short_bytes(customer.as_str().as_bytes()).i64(period_start.0);
            }
            TxBody::IssueCreditNote { customer, order } => {
                writer.u8(8).short_bytes(customer.as_str().as_bytes()).u64(*order);
            }
            TxBody::RotateSecret { version, sealed } => {
                writer.u8(10).u32(*version).fixed(sealed);
            }
        }
        writer.finish()
    }

    /// Decodes canonical bytes of a committed transaction.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > TRANSACTION_BYTES_MAX {
            return Err(DecodeError::TooLarge { size: bytes.len(), limit: TRANSACTION_BYTES_MAX });
        }
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != TX_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let tx_id = TxId(reader.array()?);
        let rules_version = reader.u32()?;
        let time = UnixMillis(reader.i64()?);
        let body = match reader.u8()? {
            1 => TxBody::Admin(SignedAdmin::decode(&mut reader)?),
            2 => {
                let gateway_id = decode_id(&mut reader, "gateway_id")?;
                let count = reader.u32()? as usize;
                if count > BATCH_READINGS_MAX {
                    return Err(DecodeError::TooLarge { size: count, limit: BATCH_READINGS_MAX });
                }
                let mut readings = Vec::with_capacity(count);
                for _ in 0..count {
                    let bytes = reader.take(READING_BYTES)?.to_vec();
                    let signature: [u8; 64] = reader.array()?;
                    let backfill = reader.bool("backfill")?;
                    let signed = SignedReading::from_parts(bytes, signature)?;
                    readings.push(BatchReading { reading: VerifiedReading::from_committed(signed), backfill });
                }
                TxBody::Readings(ReadingBatch { gateway_id, readings })
            }
            3 => TxBody::Tick,
            4 => TxBody::SignatureMarker,
            tag @ (5 | 9) => TxBody::Signature(RootSignature {
                marker_index: reader.u64()?,
                root: reader.array()?,
                node_id: reader.u64()?,
                node_key: reader.array()?,
                signature: reader.array()?,
                signed_at: if tag == 9 { Some(reader.i64()?) } else { None },
            }),
            6 => TxBody::Gov(crate::gov::SignedGov::decode(&mut reader)?),
            7 => TxBody::IssueInvoice {
                customer: decode_id(&mut reader, "customer")?,
                period_start: crate::ids::UnixSeconds(reader.i64()?),
            },
            8 => TxBody::IssueCreditNote { customer: decode_id(&mut reader, "customer")?, order: reader.u64()? },
            10 => TxBody::RotateSecret { version: reader.u32()?, sealed: reader.array()? },
            other => return Err(DecodeError::invalid("body", format!("unknown kind {other}"))),
        };
        reader.finish()?;
        Ok(Transaction { tx_id, rules_version, time, body })
    }
}

// serde only for openraft's transport: the canonical bytes as hex.
impl Serialize for Transaction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.encode()))
    }
}
impl<'de> Deserialize<'de> for Transaction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        Transaction::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod admin_id_tests {
    use super::*;

    #[test]
    fn an_admin_transaction_id_follows_from_its_signed_bytes() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let action = || AdminAction::SetVoters { voters: vec![1, 2, 3] };
        let first = SignedAdmin::sign(4, action(), &key);
        assert_eq!(first.tx_id(), SignedAdmin::sign(4, action(), &key).tx_id(), "a re-signed retry keeps its id");
        assert_ne!(first.tx_id(), SignedAdmin::sign(5, action(), &key).tx_id(), "another nonce, another id");
        let mut forged = first.clone();
        forged.signature[0] ^= 1;
        assert_ne!(first.tx_id(), forged.tx_id(), "the id covers the signature");
    }

    #[test]
    fn a_published_tariff_round_trips_and_an_oversized_one_is_refused() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let json = br#"{"id":"x"}"#.to_vec();
        let admin = SignedAdmin::sign(1, AdminAction::PublishTariff { tariff_json: json.clone() }, &key);
        let decoded = SignedAdmin::from_bytes(&admin.to_bytes()).expect("decodes");
        assert_eq!(decoded.action, AdminAction::PublishTariff { tariff_json: json });
        decoded.verify().expect("the signature covers the tariff bytes");
        // A length prefix beyond the limit is refused before anything is read.
        let mut bytes = admin.to_bytes();
        // Nonce (8 bytes), then the action's tag (8), then its u32 length.
        assert_eq!(bytes[8], 8, "the action tag");
        bytes[9..13].copy_from_slice(&(TARIFF_JSON_BYTES_MAX as u32 + 1).to_be_bytes());
        assert!(SignedAdmin::from_bytes(&bytes).is_err());
    }
}
