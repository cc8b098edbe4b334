//! Applies committed entries to a [`Store`] as openraft does (contiguous log indexes from 0,
//! several entries per `apply` call), without a cluster: for store-level tests and for
//! `wattle bench state`. Everything it applies is what a leader would commit: admin transactions
//! signed with an operator key, readings signed by meter keys and verified, signature markers and
//! root signatures by an endorsed node key.

use anyhow::Context;
use domain::ids::{CustomerId, GatewayId, KeyId, MeterId, Sequence, TxId, UnixMillis, UnixSeconds};
use domain::money::{Currency, UnitPrice};
use domain::reading::Reading;
use domain::tx::{AdminAction, BatchReading, ReadingBatch, RootSignature, SignedAdmin, Transaction, TxBody};
use ed25519_dalek::SigningKey;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use rust_decimal::Decimal;

use crate::entry::TypeConfig;
use crate::state::TxResult;
use crate::store::{StateMachineStore, Store};

/// The node id the driver signs roots as.
pub const DRIVER_NODE_ID: u64 = 1;
/// The time of the driver's entries: this instant plus one millisecond per transaction applied.
pub const DRIVER_EPOCH_MS: i64 = 1_767_225_600_000;

/// A store fed with committed entries.
pub struct Driver {
    pub store: Store,
    machine: StateMachineStore,
    next_index: u64,
    next_tx: u64,
    operator: SigningKey,
    nonce: u64,
    node_key: SigningKey,
    service_key: SigningKey,
}

/// A simulated meter's id and signing key, deterministic in `meter`.
pub fn meter(meter: u32) -> (MeterId, SigningKey) {
    let mut seed = [0x4d; 32];
    seed[..4].copy_from_slice(&meter.to_be_bytes());
    (MeterId::new(format!("D{meter:07}")).expect("a valid meter id"), SigningKey::from_bytes(&seed))
}

/// One 15-minute import reading of a driver meter (`sequence` from 1).
pub fn reading(meter_index: u32, sequence: u64, import_wh: u64) -> Reading {
    let (meter_id, _) = meter(meter_index);
    Reading::import_interval(
        meter_id,
        KeyId(1),
        Sequence(sequence),
        UnixSeconds(1_767_225_600 + 900 * sequence as i64),
        import_wh * sequence,
        import_wh,
    )
}

/// Signs and verifies readings of driver meters into one batch transaction body.
pub fn readings_body(readings: &[(u32, Reading)]) -> TxBody {
    let items = readings
        .iter()
        .map(|(meter_index, reading)| {
            let (_, key) = meter(*meter_index);
            (reading.sign(&key).expect("a valid reading"), key.verifying_key().to_bytes())
        })
        .collect();
    let verified = domain::verify::verify_batch(items, &mut rand::thread_rng());
    TxBody::Readings(ReadingBatch {
        gateway_id: GatewayId::new("gw-driver").expect("a valid id"),
        readings: verified
            .into_iter()
            .map(|outcome| BatchReading { reading: outcome.expect("signed with its own key"), backfill: false })
            .collect(),
    })
}

impl Driver {
    /// A driver over `store`, which must be empty; applies openraft's first (blank) entry.
    pub async fn new(store: Store) -> anyhow::Result<Self> {
        let machine = store.state_machine();
        let mut driver = Driver {
            store,
            machine,
            next_index: 0,
            next_tx: 0,
            operator: SigningKey::from_bytes(&[0x0a; 32]),
            nonce: 0,
            node_key: SigningKey::from_bytes(&[0x0b; 32]),
            service_key: SigningKey::from_bytes(&[0x0c; 32]),
        };
        driver.apply_entries(vec![EntryPayload::Blank]).await?;
        Ok(driver)
    }

    /// The next log index to be applied.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    async fn apply_entries(&mut self, payloads: Vec<EntryPayload<TypeConfig>>) -> anyhow::Result<Vec<TxResult>> {
        let entries: Vec<Entry<TypeConfig>> = payloads
            .into_iter()
            .map(|payload| {
                let log_id = LogId::new(CommittedLeaderId::new(1, DRIVER_NODE_ID), self.next_index);
                self.next_index += 1;
                Entry { log_id, payload }
            })
            .collect();
        Ok(self.machine.apply(entries).await?)
    }

    /// Applies one entry per body, all in one `apply` call (one write batch).
    pub async fn apply(&mut self, bodies: Vec<TxBody>) -> anyhow::Result<Vec<TxResult>> {
        let payloads = bodies
            .into_iter()
            .map(|body| {
                self.next_tx += 1;
                let mut tx_id = [0u8; 16];
                tx_id[8..].copy_from_slice(&self.next_tx.to_be_bytes());
                EntryPayload::Normal(Transaction {
                    tx_id: TxId(tx_id),
                    rules_version: domain::settlement::RULES_VERSION,
                    time: UnixMillis(DRIVER_EPOCH_MS + self.next_tx as i64),
                    body,
                })
            })
            .collect();
        self.apply_entries(payloads).await
    }

    /// Applies one operator-signed admin action; `Err` names the reason if the ledger refused it.
    pub async fn admin(&mut self, action: AdminAction) -> anyhow::Result<Result<(), String>> {
        self.nonce += 1;
        let body = TxBody::Admin(SignedAdmin::sign(self.nonce, action, &self.operator));
        let result = self.apply(vec![body]).await?.pop().context("one result")?;
        if result.admin_refused.is_some() {
            self.nonce -= 1; // a refused action does not consume its nonce
        }
        Ok(result.admin_refused.map_or(Ok(()), Err))
    }

    /// Registers `meters` driver meters (one customer each, EUR) and a flat price.
    pub async fn configure(&mut self, meters: u32, price_per_kwh: Decimal) -> anyhow::Result<()> {
        let currency = Currency::new("EUR").expect("EUR is supported");
        let refused = |what: &str, reason: String| anyhow::anyhow!("{what} refused: {reason}");
        self.admin(AdminAction::SetFlatPrice(UnitPrice { per_kwh: price_per_kwh, currency }))
            .await?
            .map_err(|reason| refused("price", reason))?;
        for index in 0..meters {
            let (meter_id, key) = meter(index);
            let customer_id = CustomerId::new(format!("C{index:07}")).expect("a valid id");
            self.admin(AdminAction::RegisterCustomer { customer_id: customer_id.clone(), currency })
                .await?
                .map_err(|reason| refused("customer", reason))?;
            self.admin(AdminAction::RegisterMeter {
                meter_id,
                key_id: KeyId(1),
                public_key: key.verifying_key().to_bytes(),
                customer_id,
            })
            .await?
            .map_err(|reason| refused("meter", reason))?;
        }
        let node_key = self.node_key.verifying_key().to_bytes();
        // Endorsed for a year from the driver's epoch (its entries' times).
        let validity =
            domain::receipt::Validity { not_before: DRIVER_EPOCH_MS, not_after: DRIVER_EPOCH_MS + 365 * 86_400_000 };
        self.admin(AdminAction::EndorseNode {
            node_id: DRIVER_NODE_ID,
            node_key,
            service_key: self.service_key.verifying_key().to_bytes(),
            endorsement: domain::receipt::endorse_for(&self.service_key, DRIVER_NODE_ID, &node_key, Some(validity)),
            validity: Some(validity),
        })
        .await?
        .map_err(|reason| refused("endorsement", reason))?;
        Ok(())
    }

    /// Publishes `tariff` and binds driver meters `0..meters` to their customers under it, from
    /// its start, billing day 1 (rules version 2 then settles them by it).
    pub async fn bind_all(&mut self, meters: u32, tariff: &domain::tariff::TariffVersion) -> anyhow::Result<()> {
        let refused = |what: &str, reason: String| anyhow::anyhow!("{what} refused: {reason}");
        self.admin(AdminAction::PublishTariff { tariff_json: tariff.to_canonical_json() })
            .await?
            .map_err(|reason| refused("tariff", reason))?;
        for index in 0..meters {
            let binding = domain::settle::Binding {
                meter: meter(index).0,
                customer: format!("C{index:07}").parse().expect("a valid id"),
                supply_point: format!("SP{index:07}"),
                tariff: tariff.id.clone(),
                billing_day: 1,
                time_zone: tariff.time_zone,
                from: tariff.valid_from,
                to: None,
            };
            self.admin(AdminAction::Bind { binding_json: binding.to_canonical_json() })
                .await?
                .map_err(|reason| refused("binding", reason))?;
        }
        Ok(())
    }

    /// Builds a snapshot of the state as it stands; returns its data file's size in bytes.
    pub async fn snapshot_bytes(&self) -> anyhow::Result<u64> {
        use openraft::RaftSnapshotBuilder;
        let snapshot = self.store.state_machine().build_snapshot().await?;
        Ok(snapshot.snapshot.path().metadata()?.len())
    }

    /// The service key that endorsed the driver's node key (receipts verify under it).
    pub fn service_public_key(&self) -> [u8; 32] {
        self.service_key.verifying_key().to_bytes()
    }

    /// Signs everything applied so far: a marker, then the node's signature over the root at it.
    /// Returns the marker's index.
    pub async fn sign(&mut self) -> anyhow::Result<u64> {
        let marker = self.next_index;
        self.apply(vec![TxBody::SignatureMarker]).await?;
        let root = self.store.history(marker)?.context("the marker's history record")?.root;
        // The next entry's time (`apply`), which the signature covers.
        let signed_at = DRIVER_EPOCH_MS + self.next_tx as i64 + 1;
        let signature = RootSignature::sign(marker, root, DRIVER_NODE_ID, &self.node_key, Some(signed_at));
        let result = self.apply(vec![TxBody::Signature(signature)]).await?;
        if let Some(reason) = result.first().and_then(|result| result.admin_refused.clone()) {
            anyhow::bail!("signature refused: {reason}");
        }
        Ok(marker)
    }
}
