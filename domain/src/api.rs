//! JSON shapes of the ledger's client API, shared by the ledger, the gateway and billing
//! (loopback, unauthenticated until the consortium issue adds service authentication).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, GatewayId, MeterId};
use crate::money::Currency;
use crate::reading::Envelope;

/// `POST /v1/readings`: a gateway forwards verified-at-the-edge readings; the leader verifies
/// them again before proposing (it does not trust a gateway's word).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitReadings {
    pub gateway_id: GatewayId,
    pub readings: Vec<Envelope>,
    /// The gateway's Ed25519 signature over [`batch_message`]: who vouches for this batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_signature: Option<GatewaySignature>,
}

/// A gateway's signature of one batch, with the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySignature {
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// 64-byte signature, hex.
    pub signature: String,
}

/// What a gateway signs for a batch: SHA-256 over a domain tag, the gateway id and every
/// envelope's reading and signature fields (length-prefixed), in request order.
pub fn batch_message(gateway_id: &GatewayId, readings: &[Envelope]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"wattle.gateway-batch.v1\0");
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u32).to_be_bytes());
        hasher.update(bytes);
    };
    field(gateway_id.as_str().as_bytes());
    for envelope in readings {
        field(envelope.reading.as_bytes());
        field(envelope.signature.as_bytes());
    }
    hasher.finalize().into()
}

impl GatewaySignature {
    /// Signs a batch with the gateway's key.
    pub fn sign(key: &ed25519_dalek::SigningKey, gateway_id: &GatewayId, readings: &[Envelope]) -> GatewaySignature {
        use ed25519_dalek::Signer;
        let signature = key.sign(&batch_message(gateway_id, readings));
        GatewaySignature {
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(signature.to_bytes()),
        }
    }

    /// Checks the signature (ZIP-215, as every signature in Wattle); returns the public key.
    pub fn verify(&self, gateway_id: &GatewayId, readings: &[Envelope]) -> Result<[u8; 32], String> {
        let key: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("gateway public key is not 32 bytes of hex")?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("gateway signature is not 64 bytes of hex")?;
        crate::verify::verify_signature(&key, &signature, &batch_message(gateway_id, readings))
            .map_err(|error| format!("gateway signature: {error}"))?;
        Ok(key)
    }
}

/// What became of each submitted reading, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitReadingsResponse {
    /// The transaction that carries the verified readings, if any were proposed (hex).
    pub tx_id: Option<String>,
    pub log_index: Option<u64>,
    pub outcomes: Vec<ReadingOutcome>,
}

/// The fate of one reading at the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingOutcome {
    /// SHA-256 of the canonical bytes, hex (absent if the envelope did not decode).
    pub digest: Option<String>,
    pub status: OutcomeStatus,
    /// Stable reason code for rejections and equivocations.
    pub reason: Option<String>,
}

/// Final statuses: the gateway may drop a reading from its outbox on any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Committed and settled.
    Accepted,
    /// The same reading was committed before: nothing changed.
    Duplicate,
    /// Same meter and sequence as a committed reading, other bytes: refused, alarm raised.
    Equivocation,
    /// Refused before the log (decode, unknown meter or key, bad signature).
    Rejected,
    /// Verified and proposed, not yet committed (only when the client did not wait): not final.
    Pending,
}

/// `GET /v1/transactions/{tx_id}`: where a transaction stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionStatus {
    pub tx_id: String,
    /// `committed`, `pending` (proposed by this node, not yet applied) or `unknown`.
    pub status: String,
    pub log_index: Option<u64>,
}

/// `GET /v1/meters`: the registry as committed in the ledger's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterInfo {
    pub meter_id: MeterId,
    /// The newest key's id.
    pub key_id: u32,
    /// The newest key, Ed25519, hex. For an attested meter: the attesting gateway's key.
    pub public_key: String,
    pub customer_id: CustomerId,
    /// Set for an unsigned (legacy) meter: the gateway whose key signs its readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_by: Option<GatewayId>,
    /// Every key of the meter with the intervals it signs, oldest first (`domain::keyring`).
    /// Absent (a registry cached before key rotation): one key, `key_id`, for every interval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<MeterKeyInfo>,
}

/// One key of a meter and its window `[valid_from, valid_until)` of interval starts (Unix
/// seconds; `valid_from` absent: since ever, `valid_until` absent: open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterKeyInfo {
    pub key_id: u32,
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<i64>,
}

impl MeterInfo {
    /// The meter's key ring as the ledger holds it; `None` if a key is not 32 bytes of hex or the
    /// windows are out of order.
    pub fn key_ring(&self) -> Option<crate::keyring::KeyRing> {
        use crate::ids::{KeyId, UnixSeconds};
        let parse = |key: &str| hex::decode(key).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
        if self.keys.is_empty() {
            return Some(crate::keyring::KeyRing::first(KeyId(self.key_id), parse(&self.public_key)?));
        }
        let keys = self
            .keys
            .iter()
            .map(|key| {
                Some(crate::keyring::MeterKey {
                    key_id: KeyId(key.key_id),
                    public_key: parse(&key.public_key)?,
                    valid_from: UnixSeconds(key.valid_from.unwrap_or(i64::MIN)),
                    valid_until: key.valid_until.map(UnixSeconds),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        crate::keyring::KeyRing::from_keys(keys)
    }

    /// Describes a key ring the way [`MeterInfo::keys`] carries it.
    pub fn describe_keys(ring: &crate::keyring::KeyRing) -> Vec<MeterKeyInfo> {
        ring.keys()
            .iter()
            .map(|key| MeterKeyInfo {
                key_id: key.key_id.0,
                public_key: hex::encode(key.public_key),
                valid_from: (key.valid_from.0 != i64::MIN).then_some(key.valid_from.0),
                valid_until: key.valid_until.map(|until| until.0),
            })
            .collect()
    }
}

/// `GET /v1/customers/{id}/account`: committed settlement state of one customer, unrounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerAccount {
    pub customer_id: CustomerId,
    pub currency: Currency,
    pub energy_import_wh: u64,
    pub energy_export_wh: u64,
    /// Sum of the interval charges posted to the account (debits), full precision.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub intervals_settled: u64,
    /// Leader-stamped time of the last transaction applied.
    pub as_of_ms: i64,
    /// Log index of the last transaction applied.
    pub applied_index: u64,
}

/// `GET /v1/transactions?from=N`: committed transactions, for followers such as billing and tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionSummary {
    pub index: u64,
    pub tx_id: String,
    pub kind: String,
    pub time_ms: i64,
    pub reading_digests: Vec<String>,
}

/// A page of committed transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionPage {
    pub transactions: Vec<TransactionSummary>,
    /// Index to ask for next.
    pub next: u64,
}

/// Error body of every Wattle HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub code: String,
    pub message: String,
}

/// `POST /v1/admin`: an operator-signed admin action, hex of `SignedAdmin::to_bytes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitAdmin {
    pub admin: String,
}

/// The ledger's answer to an admin action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitAdminResponse {
    pub log_index: u64,
    /// Why the state machine refused it, if it did. (The leader checks the signature, the
    /// operator key and the nonce before proposing and answers a refusal as an HTTP error, so
    /// this is set only when two admin transactions raced across a leader change.)
    pub refused: Option<String>,
    /// `true` when the same signed bytes were applied before (a retry after a lost answer): the
    /// answer is the earlier transaction's, and nothing was proposed again.
    #[serde(default)]
    pub retried: bool,
}

/// The content type of every process's `/metrics`: prometheus-client writes OpenMetrics text,
/// and Prometheus reads counters' `_total` samples under their `# TYPE` names only with it.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /v1/customers/{id}/statements`: a customer's billing periods (issue 13). The open ones
/// show what their close would state now (lines, totals, completeness); closed ones are frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerStatements {
    pub customer_id: CustomerId,
    pub open: Vec<crate::settle::Statement>,
    pub closed: Vec<crate::settle::Statement>,
    /// Periods whose close was refused, with the reason (a configuration error to fix).
    pub refused: Vec<RefusedClose>,
    pub as_of_ms: i64,
    pub applied_index: u64,
}

/// A period whose close the ledger refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedClose {
    pub period: crate::settle::BillingPeriod,
    pub reason: String,
}

/// `GET /v1/customers/{id}/intervals?from=&to=`: usage and cost per settled 15-minute interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerInterval {
    /// UTC start, seconds.
    pub start: i64,
    /// Start in the customer's local time.
    pub local_start: chrono::NaiveDateTime,
    pub import_wh: u64,
    pub export_wh: u64,
    /// How the value was obtained (actual, estimated, corrected).
    pub quality: crate::settle::Quality,
    pub flags: Vec<crate::tariff::Flag>,
    /// Whether readings cover the whole interval yet.
    pub complete: bool,
    pub meters: Vec<MeterId>,
    pub tariff: crate::ids::TariffId,
    /// The interval's lines at full precision (energy, network, levies, export).
    pub lines: Vec<crate::tariff::Line>,
    /// The customer's net charge for the interval, full precision (negative: a credit).
    #[serde(with = "rust_decimal::serde::str")]
    pub charge: Decimal,
}

/// `GET /v1/customers/{id}/invoices` on the ledger: the customer's issued invoices, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedInvoice {
    pub number: String,
    pub issuer: crate::ids::PartyId,
    pub sequence: u64,
    /// UTC start of the billing period it invoices.
    pub period_start: i64,
    /// The issuing transaction: its receipt's claims digest is SHA-256 of `document`.
    pub tx_id: String,
    pub ledger_index: u64,
    /// The invoice document, canonical JSON (`domain::settle::InvoiceDocument`), exactly the
    /// bytes the claims digest covers.
    pub document: String,
}

/// `GET /v1/changes` on the ledger (billing's feed): committed entries from `from`, each with the
/// customers whose private data it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Index to ask for next.
    pub next: u64,
    /// Highest index covered by a signature (what the page may reach).
    pub signed_index: u64,
}

/// One committed entry, as billing's feed sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub index: u64,
    pub tx_id: String,
    pub kind: String,
    pub time_ms: i64,
    /// Customers whose intervals, statements or invoices this entry changed.
    pub customers: Vec<CustomerId>,
    /// The earliest 15-minute interval (UTC start) it may have changed; `None`: any.
    pub since_s: Option<i64>,
    /// The entry may have changed any customer (configuration, governance, a period close):
    /// refresh all of them.
    pub all_customers: bool,
}
