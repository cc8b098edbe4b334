//! The admin configuration file: meters (registries written by `wattle sim`), customers, the
//! flat price or settlement by tariff versions, and the genesis of governance. `config_plan`
//! works out what a ledger lacks of it; `load_admin_config` submits that as operator-signed admin
//! transactions until the consortium governs the ledger (the sandbox proposes it instead).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use domain::api::{MeterInfo, SubmitAdmin, SubmitAdminResponse};
use domain::ids::{CustomerId, KeyId};
use domain::money::{Currency, UnitPrice};
use domain::tx::{AdminAction, SignedAdmin};
use ed25519_dalek::SigningKey;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::api::AppState;
use crate::state::{self, StateRead};

/// Attempts per admin transaction while a leader is being elected.
const ADMIN_ATTEMPTS_MAX: u32 = 20;

/// The admin configuration file (TOML).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The walking skeleton's flat price (rules version 1; meters without bindings).
    #[serde(default)]
    pub tariff: Option<TariffConfig>,
    /// Settlement by tariff versions (rules version 2): every registry meter is bound to its
    /// customer under `settlement.binding`.
    #[serde(default)]
    pub settlement: Option<SettlementConfig>,
    /// Meter registries written by `wattle sim --registry-out`, relative to this file.
    pub registries: Vec<PathBuf>,
    /// Hand the ledger to its consortium once the rest of this file is applied (issue 14): the
    /// founding members and the constitution. From then on the operator key signs nothing; a
    /// configuration that differs from the ledger is reported, not applied (propose it).
    #[serde(default)]
    pub governance: Option<domain::gov::Genesis>,
}

/// Tariff versions, price series and the binding every registry meter gets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// Customers' currency.
    pub currency: Currency,
    /// Tariff version files (TOML, docs/tariffs.md), relative to this file.
    #[serde(default)]
    pub tariffs: Vec<PathBuf>,
    /// Dynamic price series (JSON, `tariff::PriceSeries`), relative to this file.
    #[serde(default)]
    pub prices: Vec<PathBuf>,
    pub binding: BindingTerms,
}

/// The terms of each meter's binding: the meter's customer, the meter id as supply point.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingTerms {
    pub tariff: domain::ids::TariffId,
    pub time_zone: domain::tariff::TimeZone,
    pub billing_day: u32,
    /// Local date-time the bindings start.
    pub from: chrono::NaiveDateTime,
}

/// The flat tariff of the walking skeleton.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffConfig {
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str")]
    pub price_per_kwh: Decimal,
}

/// Submits one signed admin action through this node's own API (which forwards to the leader).
async fn submit_admin(
    app: &AppState,
    address: SocketAddr,
    admin: &SignedAdmin,
) -> Result<SubmitAdminResponse, SubmitAdminError> {
    submit_admin_to(&app.http, &app.peer.url(&address.to_string(), ""), admin).await
}

/// Why submitting an admin action failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitAdminError {
    /// The ledger refused it before the log (bad signature, not the operator's key, stale nonce,
    /// an action the state refuses): final, retrying the same bytes changes nothing.
    #[error("the ledger refused the admin transaction ({status}): {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// Not committed (yet): no leader, a timeout, a network error. Retry the same bytes: a retry
    /// of a transaction that was applied after all is recognised and answered as applied.
    #[error("admin transaction not committed: {0}")]
    NotCommitted(String),
}

/// Submits one signed admin action to a ledger node's API (any node: followers forward).
pub async fn submit_admin_to(
    http: &reqwest::Client,
    ledger_url: &str,
    admin: &SignedAdmin,
) -> Result<SubmitAdminResponse, SubmitAdminError> {
    let not_committed = |error: reqwest::Error| SubmitAdminError::NotCommitted(error.to_string());
    let request = SubmitAdmin { admin: hex::encode(admin.to_bytes()) };
    let response = http.post(format!("{ledger_url}/v1/admin")).json(&request).send().await.map_err(not_committed)?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(not_committed);
    }
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<domain::api::ErrorBody>(&text) {
        Ok(body) if status.is_client_error() => {
            Err(SubmitAdminError::Refused { status: status.as_u16(), code: body.code, message: body.message })
        }
        _ => Err(SubmitAdminError::NotCommitted(format!("{status}: {text}"))),
    }
}

/// The tariff versions and price series of `settlement` not yet in the ledger.
fn settlement_actions(
    state_view: &dyn crate::state::StateRead,
    base: &Path,
    settlement: &SettlementConfig,
) -> anyhow::Result<Vec<AdminAction>> {
    let mut actions = Vec::new();
    for file in &settlement.tariffs {
        let file = base.join(file);
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading tariff {}", file.display()))?;
        let tariff = domain::tariff::parse_toml(&text).with_context(|| format!("tariff {}", file.display()))?;
        if crate::tariffs::version(state_view, &tariff.id, tariff.valid_from).is_none() {
            actions.push(AdminAction::PublishTariff { tariff_json: tariff.to_canonical_json() });
        }
    }
    for file in &settlement.prices {
        let file = base.join(file);
        let text = std::fs::read(&file).with_context(|| format!("reading prices {}", file.display()))?;
        let series: domain::tariff::PriceSeries =
            serde_json::from_slice(&text).with_context(|| format!("prices {}", file.display()))?;
        series.validate().with_context(|| format!("prices {}", file.display()))?;
        let published = series.prices.iter().all(|(start, price)| {
            crate::settle::dynamic_price(state_view, &series.tariff, domain::ids::UnixSeconds(*start)) == Some(price.0)
        });
        if !published {
            actions.push(AdminAction::PublishPrices { prices_json: series.to_canonical_json() });
        }
    }
    Ok(actions)
}

/// What an admin configuration file asks of a ledger in `state_view`: the actions it does not
/// hold yet, in an order that applies (prices and tariffs, customers, meters, bindings), and the
/// genesis to hand it to the consortium with, if the file names one. Reads the file and the
/// files it names; idempotent: a ledger that holds the configuration needs no action.
pub fn config_plan(state_view: &dyn StateRead, path: &Path) -> anyhow::Result<ConfigPlan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: AdminConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut meters: Vec<MeterInfo> = Vec::new();
    for registry in &config.registries {
        let registry_path = base.join(registry);
        let text = std::fs::read_to_string(&registry_path)
            .with_context(|| format!("reading registry {}", registry_path.display()))?;
        let mut listed: Vec<MeterInfo> =
            serde_json::from_str(&text).with_context(|| format!("parsing registry {}", registry_path.display()))?;
        meters.append(&mut listed);
    }
    let mut actions = Vec::new();
    if let Some(tariff) = &config.tariff {
        let price = UnitPrice { per_kwh: tariff.price_per_kwh, currency: tariff.currency };
        if state::flat_price(state_view) != Some(price) {
            actions.push(AdminAction::SetFlatPrice(price));
        }
    }
    let currency = match (&config.settlement, &config.tariff) {
        (Some(settlement), _) => settlement.currency,
        (None, Some(tariff)) => tariff.currency,
        (None, None) if meters.is_empty() => Currency::new("EUR").expect("a known currency"),
        (None, None) => bail!("{}: meters need [tariff] or [settlement]", path.display()),
    };
    if let Some(settlement) = &config.settlement {
        actions.extend(settlement_actions(state_view, base, settlement)?);
    }
    let customers: BTreeSet<CustomerId> = meters.iter().map(|meter| meter.customer_id.clone()).collect();
    for customer_id in customers {
        if state::customer_currency(state_view, &customer_id).is_none() {
            actions.push(AdminAction::RegisterCustomer { customer_id, currency });
        }
    }
    let mut bindings = Vec::new();
    for meter in meters {
        let public_key: [u8; 32] = hex::decode(&meter.public_key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .with_context(|| format!("meter {}: public key is not 32 bytes of hex", meter.meter_id))?;
        // Registered already with this key, customer and attestation: nothing to do. Another key
        // is refused on apply (keys change by a rotation, not by re-registering).
        let registered = state::meter(state_view, &meter.meter_id).is_some_and(|record| {
            let newest = record.keys.newest();
            newest.key_id == KeyId(meter.key_id)
                && newest.public_key == public_key
                && record.customer_id == meter.customer_id
                && record.attested_by == meter.attested_by
        });
        if !registered {
            actions.push(match meter.attested_by.clone() {
                Some(gateway_id) => AdminAction::RegisterAttestedMeter {
                    meter_id: meter.meter_id.clone(),
                    gateway_id,
                    key_id: KeyId(meter.key_id),
                    gateway_key: public_key,
                    customer_id: meter.customer_id.clone(),
                },
                None => AdminAction::RegisterMeter {
                    meter_id: meter.meter_id.clone(),
                    key_id: KeyId(meter.key_id),
                    public_key,
                    customer_id: meter.customer_id.clone(),
                },
            });
        }
        if let Some(settlement) = &config.settlement {
            let terms = &settlement.binding;
            let binding = domain::settle::Binding {
                meter: meter.meter_id.clone(),
                customer: meter.customer_id.as_str().parse()?,
                supply_point: meter.meter_id.to_string(),
                tariff: terms.tariff.clone(),
                billing_day: terms.billing_day,
                time_zone: terms.time_zone,
                from: terms.from,
                to: None,
            };
            if !crate::settle::bindings_of(state_view, &meter.meter_id).contains(&binding) {
                bindings.push(AdminAction::Bind { binding_json: binding.to_canonical_json() });
            }
        }
    }
    // Bindings after every customer is registered.
    actions.extend(bindings);
    let genesis = config.governance.map(|genesis| domain::gov::Genesis::new(genesis.members, genesis.constitution));
    Ok(ConfigPlan { actions, genesis })
}

/// The actions an admin configuration needs (`config_plan`).
#[derive(Debug)]
pub struct ConfigPlan {
    pub actions: Vec<AdminAction>,
    pub genesis: Option<domain::gov::Genesis>,
}

/// Submits the admin transactions needed to make the ledger's configuration match the file,
/// signed by the operator key: idempotent, so a restart with the same file changes nothing. Once
/// the consortium governs the ledger, differences are reported, not applied (propose them).
pub async fn load_admin_config(
    app: &AppState,
    address: SocketAddr,
    path: &Path,
    key: &SigningKey,
) -> anyhow::Result<()> {
    let state_view = app.store.state();
    let ConfigPlan { mut actions, genesis } = config_plan(&state_view, path)?;
    if crate::governance::is_governed(&state_view) {
        if !actions.is_empty() {
            tracing::warn!(
                path = %path.display(),
                actions = actions.len(),
                "the consortium governs this ledger: the admin configuration's changes are not applied; propose them (wattle gov propose)"
            );
        }
        return Ok(());
    }
    if let Some(genesis) = genesis {
        actions.push(AdminAction::StartGovernance { genesis_json: genesis.to_canonical_json() });
    }
    let mut nonce = state::admin_nonce(&state_view);
    let count = actions.len();
    for action in actions {
        nonce += 1;
        // The same bytes on every attempt, so a retry of one that was applied after all is
        // recognised by its transaction id rather than refused as a stale nonce.
        let admin = SignedAdmin::sign(nonce, action, key);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match submit_admin(app, address, &admin).await {
                Ok(SubmitAdminResponse { refused: None, .. }) => break,
                Ok(SubmitAdminResponse { refused: Some(reason), .. }) => {
                    bail!("the ledger refused an admin transaction: {reason}")
                }
                Err(error @ SubmitAdminError::Refused { .. }) => return Err(error.into()),
                Err(error) if attempts < ADMIN_ATTEMPTS_MAX => {
                    tracing::warn!(%error, attempts, "admin transaction not committed yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempts as u64)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    tracing::info!(path = %path.display(), actions = count, "admin configuration loaded");
    Ok(())
}
