//! The registry of meters the ledger committed, refreshed from `GET /v1/meters` and cached on
//! disk for a start while the ledger is away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use domain::api::MeterInfo;
use domain::ids::{GatewayId, MeterId};
use domain::keyring::KeyRing;

use crate::{GatewayConfig, Shared};

/// One meter of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryEntry {
    /// The meter's keys and the intervals each signs, as the ledger holds them.
    pub(crate) keys: KeyRing,
    /// For an unsigned meter: the gateway that attests its readings.
    pub(crate) attested_by: Option<GatewayId>,
}

/// The meters this gateway accepts readings from, as committed in the ledger.
pub(crate) struct Registry {
    pub(crate) meters: HashMap<MeterId, RegistryEntry>,
    pub(crate) refreshed: Option<Instant>,
}

/// The registry cache: the last registry the ledger served, so a gateway restarted while the
/// ledger is away still knows its meters.
pub(crate) fn registry_cache(config: &GatewayConfig) -> PathBuf {
    config.data_dir.join("registry.json")
}

pub(crate) async fn refresh_registry(shared: &Shared) -> anyhow::Result<()> {
    let url = format!("{}/v1/meters", shared.ledger_url());
    let body = match shared.http.get(&url).send().await.and_then(|r| r.error_for_status()) {
        Ok(response) => response.bytes().await?,
        Err(error) => {
            shared.next_ledger();
            return Err(error.into());
        }
    };
    let meters: Vec<MeterInfo> = serde_json::from_slice(&body)?;
    let cache = registry_cache(&shared.config);
    let temporary = cache.with_extension("json.tmp");
    if let Err(error) = std::fs::write(&temporary, &body).and_then(|()| std::fs::rename(&temporary, &cache)) {
        tracing::warn!(%error, "registry cache not written");
    }
    install_registry(shared, meters, "the ledger");
    Ok(())
}

/// Loads the cached registry, if any (at start, before the ledger answers).
pub(crate) fn load_cached_registry(shared: &Shared) -> anyhow::Result<bool> {
    let cache = registry_cache(&shared.config);
    if !cache.exists() {
        return Ok(false);
    }
    let text = std::fs::read(&cache).with_context(|| format!("reading {}", cache.display()))?;
    let meters: Vec<MeterInfo> =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", cache.display()))?;
    install_registry(shared, meters, "the cache");
    Ok(true)
}

pub(crate) fn install_registry(shared: &Shared, meters: Vec<MeterInfo>, from: &str) {
    let mut map = HashMap::with_capacity(meters.len());
    for meter in meters {
        let Some(keys) = meter.key_ring() else {
            tracing::error!(meter = %meter.meter_id, "ledger registry holds a malformed key or key window; meter skipped");
            continue;
        };
        map.insert(meter.meter_id, RegistryEntry { keys, attested_by: meter.attested_by });
    }
    let mut registry = shared.registry.lock().expect("registry lock is never poisoned");
    let grew = map.iter().any(|(meter, entry)| registry.meters.get(meter) != Some(entry));
    tracing::info!(meters = map.len(), from, grew, "registry loaded");
    registry.meters = map;
    registry.refreshed = Some(Instant::now());
    if grew {
        // Readings waiting for this meter or key: the unverified ones in the quarantine, and
        // the ones the ledger refused as unknown (retried now rather than after their backoff).
        shared.registry_grew.notify_one();
    }
}

pub(crate) fn registry_missing(shared: &Shared) -> bool {
    shared.registry.lock().expect("registry lock is never poisoned").refreshed.is_none()
}
