//! `wattle quarantine`: list what a running gateway holds, and release what the cause of which
//! was fixed (through the gateway's ops API, with an operator's token from `wattle gateway token
//! issue`).

use anyhow::Context;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct QuarantineCommand {
    #[command(subcommand)]
    pub(crate) action: Option<QuarantineAction>,
    #[command(flatten)]
    pub(crate) list: QuarantineArgs,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuarantineAction {
    /// Re-submit the held and unverified readings that match (after the cause was fixed: a
    /// setting, a registration, a price); each goes through every check again with the gateway's
    /// current configuration. Prints how many were released; repeats while more match.
    Release(ReleaseArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// The running gateway's HTTP address (its --listen).
    #[arg(long, default_value = "http://127.0.0.1:7100")]
    gateway: String,
    /// An operator's token of the gateway (`wattle gateway token issue`).
    #[arg(long, env = "WATTLE_GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only entries with this reason code (e.g. clock_future, ledger_no_tariff).
    #[arg(long)]
    reason: Option<String>,
    /// Only this meter's entries.
    #[arg(long)]
    meter: Option<String>,
    /// Only sequences from this one (inclusive).
    #[arg(long)]
    from_sequence: Option<u64>,
    /// Only sequences up to this one (inclusive).
    #[arg(long)]
    to_sequence: Option<u64>,
    /// Only entries of this class: held or unverified.
    #[arg(long)]
    class: Option<String>,
}

/// The operator's token given with --token or in WATTLE_GATEWAY_TOKEN.
fn token_of(token: Option<&str>) -> anyhow::Result<&str> {
    token.context("the gateway's quarantine needs an operator's token: --token TOKEN or WATTLE_GATEWAY_TOKEN (`wattle gateway token issue`)")
}

pub(crate) async fn release_quarantine(args: ReleaseArgs) -> anyhow::Result<()> {
    let token = token_of(args.token.as_deref())?;
    let url = format!("{}/v1/quarantine/release", args.gateway.trim_end_matches('/'));
    let filter = serde_json::json!({
        "reason": args.reason,
        "meter": args.meter,
        "from_sequence": args.from_sequence,
        "to_sequence": args.to_sequence,
        "class": args.class,
    });
    let http = reqwest::Client::new();
    let (mut released, mut not_releasable) = (0u64, 0u64);
    // Bounded: each round releases at most the gateway's page, and released entries leave.
    for _ in 0..gateway::limits::RELEASE_ROUNDS_MAX {
        let response =
            http.post(&url).bearer_auth(token).json(&filter).send().await.with_context(|| format!("asking {url}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.with_context(|| format!("{url} answered {status}"))?;
        anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
        let ids = body["released"].as_array().map_or(0, Vec::len) as u64;
        released += ids;
        not_releasable = body["not_releasable"].as_u64().unwrap_or(0);
        if body["more"] != true || ids == 0 {
            break;
        }
    }
    println!("{released} entries released; {not_releasable} matching entries are not releasable (final or garbage)");
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct QuarantineArgs {
    /// The gateway's HTTP address (its --listen).
    #[arg(long, default_value = "http://127.0.0.1:7100")]
    gateway: String,
    /// An operator's token of the gateway (`wattle gateway token issue`).
    #[arg(long, env = "WATTLE_GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// First entry id to list.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Most entries to list (the gateway answers at most 1,000 per request).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Only entries with this reason code (e.g. bad_signature, equivocation).
    #[arg(long)]
    reason: Option<String>,
    /// Print the entries as JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn list_quarantine(args: QuarantineArgs) -> anyhow::Result<()> {
    let token = token_of(args.token.as_deref())?;
    let url = format!("{}/v1/quarantine?from={}&limit={}", args.gateway.trim_end_matches('/'), args.from, args.limit);
    let response =
        reqwest::Client::new().get(&url).bearer_auth(token).send().await.with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.with_context(|| format!("{url} answered {status}"))?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    let entries = body["entries"].as_array().context("the gateway's answer has no entries")?;
    let wanted = |entry: &&serde_json::Value| args.reason.as_deref().is_none_or(|reason| entry["reason"] == reason);
    if args.json {
        for entry in entries.iter().filter(wanted) {
            println!("{entry}");
        }
        return Ok(());
    }
    println!("{:>6}  {:<24}  {:<28}  {:<44}  detail", "id", "received", "reason", "source");
    let mut shown = 0;
    for entry in entries.iter().filter(wanted) {
        let received = entry["received_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|at| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        println!(
            "{:>6}  {:<24}  {:<28}  {:<44}  {}",
            entry["id"],
            received,
            entry["reason"].as_str().unwrap_or_default(),
            entry["source"].as_str().unwrap_or_default(),
            entry["detail"].as_str().unwrap_or_default()
        );
        shown += 1;
    }
    let next = entries.last().and_then(|entry| entry["id"].as_u64()).map(|id| id + 1);
    println!("{shown} entries{}", next.map(|next| format!("; next page: --from {next}")).unwrap_or_default());
    Ok(())
}
