//! `wattle tariff check|publish`: a tariff version (TOML, docs/tariffs.md) validated and
//! summarised, or published to the ledger as an operator-signed admin transaction.

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TariffCommand {
    /// Parse and validate a tariff version (TOML, docs/tariffs.md): every refusal names its field
    /// and reason; on success prints the components, the parties paid and the SHA-256 of the
    /// canonical JSON (what the ledger records and members will vote on).
    Check {
        /// The tariff version, TOML.
        file: PathBuf,
        /// Print the canonical JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Publish a tariff version to the ledger: validated here, signed with the operator key as
    /// a `PublishTariff` admin transaction, validated again when the ledger applies it; then
    /// listed by `GET /v1/tariffs`. (Settling by it comes with rules version 2.)
    Publish {
        /// The tariff version, TOML.
        file: PathBuf,
        /// Any ledger node's client API base URL (followers forward to the leader).
        #[arg(long, default_value = "http://127.0.0.1:7000")]
        ledger: String,
        /// The operator's secret key file.
        #[arg(long)]
        operator_key: PathBuf,
    },
}

pub(crate) async fn tariff_publish(
    file: &std::path::Path,
    ledger_url: &str,
    operator_key: &std::path::Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let tariff =
        domain::tariff::parse_toml(&text).with_context(|| format!("{} is not a valid tariff", file.display()))?;
    let tariff_json = tariff.to_canonical_json();
    let operator = ledger::node::read_signing_key(operator_key)?;
    let http = crate::cli::ledger_client(ledger_url, None, std::time::Duration::from_secs(30))?;
    let config: serde_json::Value =
        http.get(format!("{ledger_url}/v1/config")).send().await?.error_for_status()?.json().await?;
    let nonce = config["admin_nonce"].as_u64().context("admin_nonce in /v1/config")? + 1;
    let sha256 = hex::encode(domain::merkle::sha256(&tariff_json));
    let action = domain::tx::AdminAction::PublishTariff { tariff_json };
    let admin = domain::tx::SignedAdmin::sign(nonce, action, &operator);
    let response = ledger::node::submit_admin_to(&http, ledger_url, &admin).await?;
    if let Some(reason) = response.refused {
        anyhow::bail!("the ledger refused the tariff: {reason}");
    }
    println!(
        "published tariff {} from {} at log index {}; canonical sha256 {sha256}",
        tariff.id, tariff.valid_from, response.log_index
    );
    Ok(())
}

pub(crate) fn tariff_check(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use domain::tariff::EnergyPrice;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let tariff =
        domain::tariff::parse_toml(&text).with_context(|| format!("{} is not a valid tariff", file.display()))?;
    let canonical = tariff.to_canonical_json();
    if json {
        println!("{}", String::from_utf8_lossy(&canonical));
        return Ok(());
    }
    let energy = match &tariff.energy {
        EnergyPrice::Flat { per_kwh } => format!("flat {per_kwh} {}/kWh", tariff.currency),
        EnergyPrice::TimeOfUse { seasons, holidays } => {
            format!("time of use, {} season(s), {} holiday(s)", seasons.len(), holidays.len())
        }
        EnergyPrice::Dynamic { markup_per_kwh, fallback_per_kwh } => {
            format!("dynamic, markup {markup_per_kwh}, fallback {fallback_per_kwh} {}/kWh", tariff.currency)
        }
    };
    let valid_to = tariff.valid_to.map_or_else(|| "open".to_string(), |to| to.to_string());
    println!("tariff {} ({}), valid from {} to {valid_to} local time", tariff.id, tariff.currency, tariff.valid_from);
    println!("  time zone {} (tz database {})", tariff.time_zone.tz(), domain::tariff::TZDB_VERSION);
    println!("  energy: {energy}");
    let mut parts = Vec::new();
    if !tariff.tiers.is_empty() {
        parts.push(format!("{} tier(s)", tariff.tiers.len()));
    }
    if let Some(standing) = tariff.standing_charge_per_day {
        parts.push(format!("standing charge {standing}/day"));
    }
    if tariff.export.is_some() {
        parts.push("export".to_string());
    }
    if tariff.demand.is_some() {
        parts.push("demand charge".to_string());
    }
    if tariff.network.is_some() {
        parts.push("network charge".to_string());
    }
    parts.extend(tariff.levies.iter().map(|levy| format!("levy {}", levy.name)));
    if let Some(vat) = &tariff.vat {
        parts.push(format!("VAT {}", vat.rate));
    }
    println!("  components: {}", if parts.is_empty() { "energy only".to_string() } else { parts.join(", ") });
    let parties: Vec<String> = tariff.parties().into_iter().map(ToString::to_string).collect();
    println!("  parties paid: {}", parties.join(", "));
    println!("  rounding: {:?}", tariff.rounding);
    println!("  canonical sha256: {}", hex::encode(domain::merkle::sha256(&canonical)));
    Ok(())
}
