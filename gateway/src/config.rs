//! The gateway's TOML configuration file (`wattle gateway --config FILE`); every setting but the
//! Modbus devices can also be given on the command line, which wins. `docs/gateway.md` has an
//! example.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use domain::ids::GatewayId;
use serde::Deserialize;

use crate::modbus::{DeviceMap, EnergyMap, ModbusDevice};

/// The file's contents; absent settings take the command line's value or the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub gateway_id: Option<GatewayId>,
    pub data_dir: Option<PathBuf>,
    /// MQTT broker, host:port.
    pub broker: Option<String>,
    /// TLS to the broker: the CA certificate (PEM) that signed the broker's certificate; with it
    /// the gateway connects over TLS and checks the broker's name.
    pub broker_ca_file: Option<PathBuf>,
    /// The gateway's client certificate (PEM) for a broker that requires one, with its key.
    pub broker_cert_file: Option<PathBuf>,
    pub broker_key_file: Option<PathBuf>,
    /// Ledger nodes' client API base URLs.
    pub ledger: Option<Vec<String>>,
    /// The ledger's service public key (64 hex characters), for `https://` ledger URLs.
    pub ledger_service_key: Option<String>,
    pub listen: Option<SocketAddr>,
    pub max_power_kw: Option<u64>,
    pub clock_ahead_s: Option<i64>,
    pub mqtt_keepalive_s: Option<u64>,
    pub attest_interval_s: Option<i64>,
    pub disk_budget_mb: Option<u64>,
    pub key_file: Option<PathBuf>,
    /// The operators' token file (`wattle gateway token issue`); without one, `/v1/quarantine`
    /// refuses every call.
    pub tokens: Option<PathBuf>,
    /// Most entries in the garbage store (docs/gateway.md, "Quarantine").
    pub garbage_entries_max: Option<u64>,
    /// Retention of garbage-store entries (s).
    pub garbage_retention_s: Option<u64>,
    /// How long a reading the ledger refuses for a retryable reason is retried before it is held (s).
    pub retry_horizon_s: Option<u64>,
    /// Modbus devices to poll.
    #[serde(default)]
    pub modbus: Vec<ModbusDevice>,
    /// Energy register maps of unsigned meters, by name (besides the built-in `sdm630`).
    #[serde(default)]
    pub modbus_maps: HashMap<String, EnergyMap>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The quarantine's settings: the file's values over the defaults.
    pub fn quarantine(&self) -> crate::QuarantineSettings {
        let defaults = crate::QuarantineSettings::default();
        crate::QuarantineSettings {
            garbage: crate::store::GarbageBounds {
                entries_max: self.garbage_entries_max.unwrap_or(defaults.garbage.entries_max),
                retention_ms: self.garbage_retention_s.map_or(defaults.garbage.retention_ms, |seconds| {
                    i64::try_from(seconds.saturating_mul(1_000)).unwrap_or(i64::MAX)
                }),
            },
            retry_horizon: self.retry_horizon_s.map_or(defaults.retry_horizon, std::time::Duration::from_secs),
        }
    }

    /// Each device with its register map, or an error naming the device with an unknown map, a
    /// bad unit id or an energy map without a meter id.
    pub fn devices(&self) -> anyhow::Result<Vec<(ModbusDevice, DeviceMap)>> {
        self.modbus
            .iter()
            .map(|device| {
                anyhow::ensure!((1..=247).contains(&device.unit), "{}: unit id must be 1-247", device.source());
                let map = match device.map.as_str() {
                    "sunspec" => DeviceMap::SunSpec,
                    "sdm630" => DeviceMap::Energy(EnergyMap::SDM630),
                    name => DeviceMap::Energy(*self.modbus_maps.get(name).with_context(|| {
                        format!(
                            "{}: unknown register map {name:?} (sunspec, sdm630 or [modbus_maps.{name}])",
                            device.source()
                        )
                    })?),
                };
                if matches!(map, DeviceMap::Energy(_)) {
                    anyhow::ensure!(device.meter_id.is_some(), "{}: an energy map needs meter_id", device.source());
                }
                Ok((device.clone(), map))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_resolve_builtin_and_custom_maps() {
        let config: FileConfig = toml::from_str(
            r#"
            gateway_id = "gw-7"
            tokens = "/etc/wattle/gw-tokens.json"
            [[modbus]]
            address = "127.0.0.1:5020"
            unit = 1
            map = "sunspec"
            [[modbus]]
            address = "127.0.0.1:5020"
            unit = 3
            map = "sdm630"
            meter_id = "WTL0000000002"
            poll_ms = 1000
            [[modbus]]
            address = "127.0.0.1:5021"
            unit = 4
            map = "acme"
            meter_id = "WTL0000000009"
            [modbus_maps.acme]
            table = "holding"
            import = 100
            export = 102
            encoding = "uint32-wh"
            word_order = "little"
            "#,
        )
        .expect("parses");
        assert_eq!(config.tokens.as_deref(), Some(Path::new("/etc/wattle/gw-tokens.json")));
        let devices = config.devices().expect("resolves");
        assert_eq!(devices[0].1, DeviceMap::SunSpec);
        assert_eq!(devices[1].1, DeviceMap::Energy(EnergyMap::SDM630));
        assert_eq!(devices[1].0.poll_ms, 1_000);
        let DeviceMap::Energy(acme) = devices[2].1 else { panic!("energy map") };
        assert_eq!((acme.import, acme.word_order), (100, crate::modbus::WordOrder::Little));
    }

    #[test]
    fn mistakes_are_named() {
        let unknown: FileConfig =
            toml::from_str("[[modbus]]\naddress = \"127.0.0.1:1\"\nunit = 1\nmap = \"nope\"\n").expect("parses");
        assert!(unknown.devices().expect_err("unknown map").to_string().contains("unknown register map"));
        let no_meter: FileConfig =
            toml::from_str("[[modbus]]\naddress = \"127.0.0.1:1\"\nunit = 2\nmap = \"sdm630\"\n").expect("parses");
        assert!(no_meter.devices().expect_err("needs meter").to_string().contains("meter_id"));
        assert!(toml::from_str::<FileConfig>("brokr = \"x\"").is_err(), "unknown keys are refused");
    }
}
