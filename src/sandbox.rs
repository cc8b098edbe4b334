//! `wattle sandbox`: the whole platform in one process on 127.0.0.1 — an embedded rumqttd broker,
//! a ledger node, a gateway, billing and a simulated fleet in accelerated time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use domain::clock::{wall_clock_now, Clock};
use domain::ids::{GatewayId, UnixMillis, UnixSeconds};
use rust_decimal::Decimal;

use crate::cli::shutdown_signal;
use crate::process::{free_port, poll_until};

/// Options of the sandbox.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Number of simulated meters (one customer each).
    #[arg(long, default_value_t = 100)]
    meters: u32,
    /// Simulated seconds per real second (900: a 15-minute interval per second).
    #[arg(long, default_value_t = 900)]
    speed: u32,
    /// Simulated start instant: 11:30 Berlin time on Tuesday 6 January 2026, so the first
    /// intervals are priced by time of use and, from 12:00, by the day of dynamic prices
    /// (src/sandbox_tariff.rs has the tariff).
    #[arg(long, default_value = "2026-01-06T10:30:00Z")]
    start: chrono::DateTime<chrono::Utc>,
    /// Seed of the fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep data here instead of a temporary directory removed at exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Smoke mode: run N intervals, check every served bill against the ground truth times the
    /// price, and exit 0 only if all match.
    #[arg(long)]
    exit_after_intervals: Option<u64>,
    /// The fleet publishes N intervals, then stops; everything else keeps running (the ledger's
    /// clock too, so periods still close and invoices are issued) until interrupted: a frozen
    /// fleet whose bills stay still, for tests and screenshots. SIGUSR1 (`kill -USR1 PID`) makes
    /// it publish one more interval (the next in sequence, at once).
    #[arg(long, conflicts_with = "exit_after_intervals")]
    intervals: Option<u64>,
    /// Each node snapshots its state (and purges the log behind it) after this many entries.
    #[arg(long, default_value_t = ledger::limits::SNAPSHOT_AFTER_ENTRIES_DEFAULT)]
    snapshot_after_entries: u64,
    /// Serve the ledger over plain HTTP instead of TLS (nodes' certificates endorsed by the
    /// service key; the gateway, billing and the nodes themselves trust only those). For
    /// looking at the traffic with ordinary tools, never for production.
    #[arg(long)]
    no_tls: bool,
}

/// Ledger nodes the sandbox runs.
const LEDGER_NODES: u64 = 3;

/// Tries at finding consecutive free ports for the sites' Modbus servers.
const PORT_RUN_ATTEMPTS: u32 = 20;

/// How long smoke mode waits for the last readings to settle.
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(60);

/// The first of `count` consecutive free ports (site N's Modbus server listens on base + N).
fn free_port_run(count: u32) -> anyhow::Result<u16> {
    for _ in 0..PORT_RUN_ATTEMPTS {
        let base = free_port()?;
        let all_free = (0..count).all(|offset| {
            base.checked_add(offset as u16).is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if all_free {
            return Ok(base);
        }
    }
    bail!("no {count} consecutive free ports on 127.0.0.1 after {PORT_RUN_ATTEMPTS} tries")
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    let temporary = tempfile::Builder::new().prefix("wattle-sandbox-").tempdir()?;
    let data_dir: PathBuf = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    // Keys, databases and logs with customers' data: owner only (0700; key files 0600).
    ledger::store::create_private_dir(&data_dir)?;
    let log_path = data_dir.join("sandbox.log");
    crate::init_logging(crate::LOG_FILTER_DEFAULT, Some(&log_path))?;
    println!("Starting the Wattle sandbox (logs: {})", log_path.display());
    let before_first_entry_ms = args.start.timestamp_millis() - ledger::endorsements::PERIOD_LEAD_MS;
    let clock = Clock::Simulated {
        start: UnixMillis(args.start.timestamp_millis()),
        anchor: wall_clock_now(),
        speed: args.speed.max(1),
    };
    // Configuration: operator key, registry of the fleet, tariff.
    let operator_key = data_dir.join("operator.key");
    ledger::node::load_or_create_key(&operator_key)?;
    // The last meter is an unsigned legacy meter (SDM630 over Modbus): the gateway attests its
    // readings with its own key, which the registry names as the meter's.
    anyhow::ensure!(args.meters >= 2, "the sandbox needs at least 2 meters");
    // One Modbus server addresses at most 247 units, so a large fleet is split into sites; the
    // gateway polls site 0, whose last meter is the legacy one.
    let sites = args.meters.div_ceil(firmware_sim::modbus::UNITS_PER_SITE_MAX as u32).max(1);
    let legacy = args.meters.div_ceil(sites).min(args.meters) - 1;
    let gateway_id = GatewayId::new("sandbox-gw")?;
    let gateway_key = gateway::load_or_create_key(&data_dir.join("gateway").join("gateway.key"))?;
    let mut registry = firmware_sim::registry(args.seed, args.meters);
    registry[legacy as usize].public_key = hex::encode(gateway_key.verifying_key().to_bytes());
    registry[legacy as usize].attested_by = Some(gateway_id.clone());
    std::fs::write(data_dir.join("meters.json"), serde_json::to_string_pretty(&registry)?)?;
    // The operator's configuration only hands the new ledger to its three members (genesis);
    // the fleet, tariffs, prices and bindings are the consortium's and pass by vote below.
    let admin_config = data_dir.join("ledger-config.toml");
    std::fs::write(&admin_config, format!("registries = []\n\n{}", governance_config(&data_dir)?))?;
    let consortium_config = data_dir.join("consortium-config.toml");
    let (tariff_files, prices_file) = crate::sandbox_tariff::write(&data_dir)?;
    std::fs::write(
        &consortium_config,
        format!(
            "registries = [\"meters.json\"]\n\n[settlement]\ncurrency = \"EUR\"\ntariffs = {tariff_files:?}\n\
             prices = [{prices_file:?}]\n\n[settlement.binding]\ntariff = \"{}\"\ntime_zone = \"Europe/Berlin\"\n\
             billing_day = 1\nfrom = \"2026-01-01T00:00:00\"\n",
            crate::sandbox_tariff::TARIFF_ID,
        ),
    )?;
    let broker_port = free_port()?;
    crate::broker::start(broker_port).await?;
    // Three ledger nodes, as the consortium runs it: supplier, grid operator, regulator.
    // Raft on ports of their own (`raft_nodes.json`), off the client ports (`nodes.json`).
    let clients = node_addresses(&data_dir, "nodes.json")?;
    let members = node_addresses(&data_dir, "raft_nodes.json")?;
    // The service key endorses each node's signing key: peers take raft requests only from
    // endorsed nodes (`ledger::peer_auth`), and every receipt verifies offline.
    let service_key_path = data_dir.join("service.key");
    let service_key = ledger::node::load_or_create_key(&service_key_path)?;
    // Over TLS every client of the ledger (the nodes, the gateway, billing, the sandbox's own
    // governance) trusts exactly the nodes this key endorses (`domain::tls`).
    let trust = (!args.no_tls).then(|| service_key.verifying_key().to_bytes());
    let mut starting = Vec::new();
    for ((id, address), (_, raft_address)) in clients.iter().zip(&members) {
        let node_dir = data_dir.join(format!("node-{id}"));
        ledger::store::create_private_dir(&node_dir)?;
        let node_key = ledger::node::load_or_create_key(&node_dir.join("node.key"))?;
        // Peers judge this endorsement by the wall clock: a year from now.
        let validity = ledger::endorsements::period_from(wall_clock_now().0, ledger::endorsements::VALID_DAYS_DEFAULT);
        let peer_auth = ledger::node::PeerAuth {
            service_key: service_key.verifying_key().to_bytes(),
            endorsement: domain::receipt::endorse_for(
                &service_key,
                *id,
                &node_key.verifying_key().to_bytes(),
                Some(validity),
            ),
            validity: Some(validity),
        };
        let config = ledger::node::NodeConfig {
            node_id: *id,
            data_dir: data_dir.join(format!("node-{id}")),
            listen: address.parse()?,
            raft_listen: Some(raft_address.parse()?),
            bootstrap: false,
            init_members: members.clone(),
            admin_config: (*id == 1).then(|| admin_config.clone()),
            operator_key: (*id == 1).then(|| operator_key.clone()),
            clock,
            snapshot_after_entries: args.snapshot_after_entries,
            node_key: None,
            signature_interval: Some(ledger::limits::SIGNATURE_INTERVAL_DEFAULT),
            peer_auth: Some(peer_auth),
            measurement: None,
            seal: true,
            tls: trust.is_some(),
        };
        starting.push(tokio::spawn(ledger::node::start(config)));
    }
    let mut nodes = Vec::new();
    for node in starting {
        nodes.push(node.await??);
    }
    let ledger_urls: Vec<String> = nodes.iter().map(|node| format!("{}://{}", node.scheme, node.address)).collect();
    let ledger_http = crate::cli::ledger_client_trusting(trust, Duration::from_secs(30))?;
    let consortium = Consortium::wait_governed(&data_dir, &ledger_urls[0], ledger_http).await?;
    // What the consortium configuration asks that the ledger lacks (nothing on a restart).
    let plan = ledger::node::config_plan(&nodes[0].store.state(), &consortium_config)?;
    for (part, actions) in plan.actions.chunks(domain::limits::PROPOSAL_ACTIONS_MAX).enumerate() {
        let title = format!("sandbox fleet, tariffs and bindings, part {}", part + 1);
        let id = consortium.pass(&title, actions.to_vec()).await?;
        println!("governance: {} configuration actions passed by proposal {id}", actions.len());
    }
    let mut admission = Vec::new();
    for url in &ledger_urls {
        let (node_id, node_key) = ledger::node::node_identity(&consortium.http, url).await?;
        // Receipts judge this one by the ledger's (simulated) clock: from before the sandbox's
        // first entry to a year after it.
        let validity = ledger::endorsements::period_from(clock.now().0, ledger::endorsements::VALID_DAYS_DEFAULT);
        let validity =
            domain::receipt::Validity { not_before: validity.not_before.min(before_first_entry_ms), ..validity };
        admission.push(domain::tx::AdminAction::EndorseNode {
            node_id,
            node_key,
            service_key: service_key.verifying_key().to_bytes(),
            endorsement: domain::receipt::endorse_for(&service_key, node_id, &node_key, Some(validity)),
            validity: Some(validity),
        });
    }
    let gateway_public = gateway_key.verifying_key().to_bytes();
    admission
        .push(domain::tx::AdminAction::RegisterGateway { gateway_id: gateway_id.clone(), public_key: gateway_public });
    // Billing reads customers' data from the ledger as a registered reader, by its own key.
    let billing_key = ledger::node::load_or_create_key(&data_dir.join("billing.key"))?;
    admission.push(domain::tx::AdminAction::RegisterReader {
        reader_id: domain::ids::ReaderId::new("billing")?,
        public_key: billing_key.verifying_key().to_bytes(),
    });
    // The code the sandbox's nodes run: from now on only nodes attesting it get the secrets.
    let measurement = ledger::attestation::measure_self().context("measuring this executable")?;
    if !ledger::registry::accepted_measurements(&nodes[0].store).contains(&measurement) {
        admission.push(domain::tx::AdminAction::AcceptMeasurement { measurement });
    }
    let id = consortium
        .pass(
            "endorse the sandbox's ledger nodes, register its gateway and billing, accept its code measurement",
            admission,
        )
        .await?;
    println!(
        "governance: members supplier, grid (vote) and regulator (audits); nodes endorsed and gateway {gateway_id} \
         registered by proposal {id}"
    );
    println!("service public key (verify receipts with it): {}", hex::encode(service_key.verifying_key().to_bytes()));
    // Billing reads a follower: what it serves is what the cluster committed.
    let ledger_url = ledger_urls[1].clone();
    // Meters 0-3 are also read over Modbus (SunSpec; what MQTT already delivered is dropped as a
    // duplicate), the legacy meter only there.
    let modbus_port = free_port_run(sites)?;
    let modbus_address: std::net::SocketAddr = format!("127.0.0.1:{modbus_port}").parse()?;
    let device =
        |meter: u32, map: &str| -> anyhow::Result<(gateway::modbus::ModbusDevice, gateway::modbus::DeviceMap)> {
            let device = gateway::modbus::ModbusDevice {
                address: modbus_address,
                unit: (meter + 1) as u8,
                map: map.to_string(),
                meter_id: Some(firmware_sim::meter_id(meter)),
                poll_ms: 250,
                timeout_ms: 1_000,
                retries: 2,
            };
            let resolved = if map == "sdm630" {
                gateway::modbus::DeviceMap::Energy(gateway::modbus::EnergyMap::SDM630)
            } else {
                gateway::modbus::DeviceMap::SunSpec
            };
            Ok((device, resolved))
        };
    let mut modbus = (0..legacy.min(4)).map(|meter| device(meter, "sunspec")).collect::<anyhow::Result<Vec<_>>>()?;
    modbus.push(device(legacy, "sdm630")?);
    // The gateway's quarantine (meter ids, signed readings) admits operators' tokens only: one
    // for the sandbox's operator, kept 0600 in the data directory like billing's.
    let gateway_tokens_path = data_dir.join("gateway-tokens.json");
    let gateway_token_path = data_dir.join("gateway-operator.token");
    sandbox_token(
        &gateway::access::TokenStore::open(&gateway_tokens_path)?,
        &gateway_token_path,
        gateway::access::Role::Operator,
    )?;
    let gateway = gateway::start(gateway::GatewayConfig {
        gateway_id: gateway_id.clone(),
        data_dir: data_dir.join("gateway"),
        broker_host: "127.0.0.1".into(),
        broker_port,
        // The embedded broker listens on loopback only.
        broker_tls: None,
        ledger_urls: ledger_urls.clone(),
        ledger_service_key: trust,
        listen: "127.0.0.1:0".parse()?,
        clock,
        max_power_w: gateway::limits::MAX_POWER_W_DEFAULT,
        clock_ahead_s_max: gateway::limits::CLOCK_AHEAD_S_MAX_DEFAULT,
        mqtt_keepalive: Duration::from_secs(30),
        modbus,
        attest_interval_s: gateway::limits::ATTEST_INTERVAL_S_DEFAULT,
        key_file: None,
        disk_budget_bytes: gateway::limits::DISK_BUDGET_BYTES_DEFAULT,
        quarantine: gateway::QuarantineSettings::default(),
        tokens_path: Some(gateway_tokens_path),
    })
    .await?;
    let http = reqwest::Client::new();
    let gateway_health = format!("http://{}/healthz", gateway.address);
    poll_until("gateway subscribed to the broker", Duration::from_secs(30), || async {
        http.get(&gateway_health).send().await.is_ok_and(|response| response.status().is_success()).then_some(())
    })
    .await?;
    let billing = billing::start(billing::BillingConfig {
        listen: "127.0.0.1:0".parse()?,
        ledger_url: ledger_url.clone(),
        ledger_key: Some(billing_key),
        ledger_service_key: trust,
        database_url: format!("sqlite://{}?mode=rwc", data_dir.join("billing.sqlite").display()),
        tokens_path: data_dir.join("billing-tokens.json"),
        rate_per_token: billing::auth::RATE_PER_TOKEN_DEFAULT,
        oidc: None,
    })
    .await?;
    let first_customer = firmware_sim::customer_id(0);
    // Billing admits bearer tokens only: one for the operator (the smoke check reads every
    // customer with it) and one for the first customer, kept 0600 in the data directory.
    let tokens = billing::auth::TokenStore::open(&data_dir.join("billing-tokens.json"))?;
    let operator_token_path = data_dir.join("billing-operator.token");
    let customer_token_path = data_dir.join(format!("customer-{first_customer}.token"));
    let operator_token = sandbox_token(&tokens, &operator_token_path, billing::auth::Role::Operator)?;
    let customer_role = billing::auth::Role::Customer { customer_id: first_customer.clone() };
    let customer_token = sandbox_token(&tokens, &customer_token_path, customer_role)?;
    let bearer = format!("-H \"Authorization: Bearer $(cat {})\"", customer_token_path.display());
    println!();
    println!(
        "Wattle sandbox is running: {} meters, simulated time from {} at {}x",
        args.meters, args.start, args.speed
    );
    println!("  MQTT broker   127.0.0.1:{broker_port} (topics wattle/v1/{{site}}/{{meter}}/reading, .../birth)");
    println!("  ledger        {}  (3 nodes; /healthz, /metrics, /v1/meters, /v1/transactions)", ledger_urls.join(" "));
    if trust.is_some() {
        println!(
            "                TLS: certificates endorsed by the service key; `wattle` commands trust them with \
             {}=<service public key>, curl needs -k (it cannot check an endorsement)",
            crate::cli::LEDGER_SERVICE_KEY_ENV
        );
    }
    println!(
        "  gateway       http://{}  (/healthz, /metrics; /v1/quarantine with the operator's token in {})",
        gateway.address,
        gateway_token_path.display()
    );
    println!(
        "  Modbus TCP    {modbus_address}  (site-0; unit N+1 is meter N; SunSpec 1/203 + signed block at 40177; \
         unit {} is {}, an SDM630 legacy meter whose readings the gateway attests)",
        legacy + 1,
        firmware_sim::meter_id(legacy)
    );
    println!("  billing       http://{}  (/openapi.json, /healthz, /metrics)", billing.address);
    println!("  data          {}", data_dir.display());
    println!();
    println!(
        "Fetch a customer's running bill (with the customer's token; the operator's is in {}):",
        operator_token_path.display()
    );
    println!("  curl -s {bearer} http://{}/v1/customers/{first_customer}/bill", billing.address);
    println!(
        "(lines: time of use, a dynamic-price day, PV feed-in, VAT; src/sandbox_tariff.rs), usage and cost by hour:"
    );
    let day = args.start.format("%Y-%m-%d");
    println!(
        "  curl -s {bearer} 'http://{}/v1/customers/{first_customer}/usage?from={day}T00:00:00Z&to={day}T23:00:00Z&group_by=hour'",
        billing.address
    );
    println!("and, once a month has closed, the invoices (each verifiable against the ledger's receipt):");
    println!("  curl -s {bearer} http://{}/v1/customers/{first_customer}/invoices", billing.address);
    println!("The customer's page (signed in with the customer's token; the token leaves the address bar at once):");
    println!("  http://{}/#access_token={customer_token}", billing.address);
    println!();
    let truth_path = data_dir.join("ground-truth.bin");
    let (step_sender, granted) = tokio::sync::watch::channel(0u64);
    let frozen = Arc::new(tokio::sync::watch::channel(None).0);
    let steps = args.intervals.map(|_| firmware_sim::Steps { granted, frozen: frozen.clone() });
    if steps.is_some() {
        tokio::spawn(announce_freezes(frozen.subscribe()));
        tokio::spawn(step_on_signal(step_sender));
    }
    let sim_config = firmware_sim::SimConfig {
        meters: args.meters,
        seed: args.seed,
        sites,
        connections_per_site: 1,
        interval_s: 900,
        // Smoke mode checks the attested legacy meter, whose first reading needs the gateway's
        // Modbus session up before its first interval begins: start the fleet's first interval at
        // the next boundary rather than inside the one the clock is in, which may end before the
        // session opens (how far in depends on how long the start took).
        epoch: args.exit_after_intervals.map(|_| {
            let interval_ms = 900_000;
            UnixSeconds((clock.now().0.div_euclid(interval_ms) + 1) * interval_ms / 1_000)
        }),
        intervals: args.exit_after_intervals.or(args.intervals),
        steps,
        broker_host: "127.0.0.1".into(),
        broker_port,
        truth_out: Some(truth_path.clone()),
        faults: Vec::new(),
        fault_plan: None,
        memory_days: firmware_sim::limits::MEMORY_DAYS_DEFAULT,
        linger: Duration::ZERO,
        clock,
        modbus_listen: Some(modbus_address),
        legacy_meters: [legacy].into_iter().collect(),
        load: Default::default(),
    };
    let fleet = firmware_sim::build_fleet(&sim_config)?;
    let sim = firmware_sim::run(sim_config, fleet);
    let progress = tokio::spawn(crate::progress::report(crate::progress::Sources {
        clock,
        ledger_url: ledger_url.clone(),
        ledger_service_key: trust,
        gateway_url: format!("http://{}", gateway.address),
        billing_url: format!("http://{}", billing.address),
        customer: first_customer.to_string(),
        customer_token: customer_token.clone(),
    }));
    let outcome = match args.exit_after_intervals {
        Some(intervals) => {
            let summary = sim.await;
            progress.abort();
            crate::progress::finish();
            let summary = summary?;
            tracing::info!(published = summary.published, "fleet finished; checking the bills");
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {operator_token}").parse()?);
            let billing_http = reqwest::Client::builder().default_headers(headers).build()?;
            check_bills(&billing_http, &format!("http://{}", billing.address), &truth_path, intervals, legacy).await
        }
        None => {
            let sim = async move { sim.await.map(|_| ()) };
            tokio::select! {
                result = sim => result,
                _ = shutdown_signal() => { crate::progress::finish(); println!("stopping..."); Ok(()) }
            }
        }
    };
    progress.abort();
    billing.stop().await;
    gateway.stop().await;
    for node in nodes {
        node.stop().await;
    }
    outcome
}

/// The sandbox's token (billing's or the gateway's) kept at `path` (0600): the one a previous run
/// on the same data directory issued, or a new one.
fn sandbox_token<R>(tokens: &domain::token::TokenStore<R>, path: &Path, role: R) -> anyhow::Result<String>
where
    R: Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    if let Ok(token) = std::fs::read_to_string(path) {
        return Ok(token.trim().to_string());
    }
    let (token, _) = tokens.issue(role, "sandbox")?;
    ledger::node::write_secret(path, &token)?;
    Ok(token)
}

/// A sandbox customer's running bill must have the tariff's period lines (standing charge, VAT)
/// and add up.
fn check_bill_lines(bill: &billing::Bill) -> anyhow::Result<()> {
    anyhow::ensure!(bill.period.is_some(), "no open period");
    anyhow::ensure!(bill.net_total + bill.vat_total == bill.total, "net + VAT != total");
    let net: Decimal = bill.lines.iter().filter(|line| line.component != "vat").map(|line| line.amount).sum();
    anyhow::ensure!(net == bill.net_total, "the lines sum to {net}, the net total is {}", bill.net_total);
    anyhow::ensure!(bill.lines.iter().any(|line| line.component == "standing"), "no standing charge");
    anyhow::ensure!(bill.vat_total > Decimal::ZERO, "no VAT");
    Ok(())
}

/// The customer's interval charges over `[from, to)` at full precision, summed from billing's
/// usage endpoint (grouped by month).
async fn usage_charge(
    http: &reqwest::Client,
    billing_url: &str,
    customer: &str,
    (from, to): (i64, i64),
) -> anyhow::Result<Decimal> {
    let url = format!("{billing_url}/v1/customers/{customer}/usage?from={from}&to={to}&group_by=month");
    let page: billing::usage::UsagePage = http.get(url).send().await?.error_for_status()?.json().await?;
    Ok(page.groups.iter().map(|group| group.cost_unrounded).sum())
}

async fn fetch_bill(http: &reqwest::Client, billing_url: &str, customer: &str) -> anyhow::Result<billing::Bill> {
    Ok(http.get(format!("{billing_url}/v1/customers/{customer}/bill")).send().await?.error_for_status()?.json().await?)
}

/// Smoke mode: every customer's usage (its interval charges so far, at full precision) must
/// equal the ground truth times the tariff, reckoned here by `sandbox_tariff::interval_charge`,
/// and its running bill must show the same energy and intervals, with standing charge and VAT.
async fn check_bills(
    http: &reqwest::Client,
    billing_url: &str,
    truth_path: &Path,
    intervals: u64,
    legacy: u32,
) -> anyhow::Result<()> {
    let truth_file = firmware_sim::Truth::read(truth_path)?;
    // The legacy meter's bill comes from readings the gateway attested at its own interval
    // boundaries: its energy must be a difference of two of the meter's registers.
    let mut registers = vec![truth_file.fleet.registers_before(legacy, 1).import_wh];
    for record in truth_file.records.iter().filter(|record| record.meter == legacy) {
        registers.push(registers[registers.len() - 1] + record.import_wh);
    }
    let legacy_customer = firmware_sim::customer_id(legacy).to_string();
    let truth: Vec<_> = truth_file.records.into_iter().filter(|record| record.meter != legacy).collect();
    let prices = crate::sandbox_tariff::dynamic_prices();
    let mut expected: BTreeMap<String, (u64, u64, Decimal)> = BTreeMap::new();
    for record in &truth {
        let entry = expected.entry(firmware_sim::customer_id(record.meter).to_string()).or_default();
        entry.0 += record.import_wh;
        entry.1 += 1;
        let start = truth_file.fleet.interval_start(record.sequence).0;
        entry.2 += crate::sandbox_tariff::interval_charge(start, record.import_wh, record.export_wh, &prices);
    }
    let range = truth.iter().fold((i64::MAX, i64::MIN), |(from, to), record| {
        let start = truth_file.fleet.interval_start(record.sequence).0;
        (from.min(start), to.max(start + 900))
    });
    let mut bills = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT_MAX;
    for customer in expected.keys() {
        loop {
            // A customer billing's feed has not reached yet is a 404: wait for it, within the deadline.
            let bill = match fetch_bill(http, billing_url, customer).await {
                Ok(bill) => bill,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if bill.intervals_settled >= intervals || tokio::time::Instant::now() >= deadline {
                bills.insert(customer.clone(), bill);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut mismatches = 0;
    for (customer, (import_wh, count, charge)) in &expected {
        let bill = &bills[customer];
        let energy_kwh = Decimal::from(*import_wh) / Decimal::from(1000u32);
        let served = usage_charge(http, billing_url, customer, range).await?;
        if served != *charge || bill.energy_import_kwh != energy_kwh || bill.intervals_settled != *count {
            mismatches += 1;
            eprintln!(
                "MISMATCH {customer}: served {served} {} for {} kWh over {} intervals; ground truth {charge} for {energy_kwh} kWh over {count}",
                bill.currency, bill.energy_import_kwh, bill.intervals_settled
            );
        }
        if let Err(reason) = check_bill_lines(bill) {
            mismatches += 1;
            eprintln!("MISMATCH {customer}: bill: {reason}");
        }
    }
    let attested = fetch_bill(http, billing_url, &legacy_customer).await?;
    let attested_wh = (attested.energy_import_kwh * Decimal::from(1000u32)).trunc();
    let attested_wh = u64::try_from(attested_wh).unwrap_or(u64::MAX);
    // float32 kWh: each register read within ~4 Wh.
    let traced = registers.iter().any(|a| registers.iter().any(|b| b > a && (b - a).abs_diff(attested_wh) <= 8));
    println!(
        "attested legacy meter {legacy_customer}: {} kWh over {} intervals, {}",
        attested.energy_import_kwh,
        attested.intervals_settled,
        if traced { "a difference of its registers" } else { "NOT a difference of its registers" }
    );
    if !traced || attested.intervals_settled == 0 {
        mismatches += 1;
    }
    let total: Decimal = bills.values().map(|bill| bill.amount).sum();
    println!(
        "smoke check: {} customers, {} readings, {intervals} intervals; bills total {total}; {} of {} bills equal the ground truth",
        expected.len(),
        truth.len(),
        expected.len().saturating_sub(mismatches),
        expected.len()
    );
    if mismatches > 0 {
        bail!("{mismatches} bills differ from the ground truth");
    }
    Ok(())
}

/// The consortium: the supplier and the grid operator vote, the regulator audits (and must
/// consent to a constitution change). Keys in the data directory, kept across runs.
const SANDBOX_MEMBERS: [(&str, &str); 3] = [("supplier", "member"), ("grid", "member"), ("regulator", "auditor")];

/// The `[governance]` section of the sandbox's admin configuration: the ledger is handed to the
/// three members once the fleet, tariff and bindings are in; each member's key file is
/// `DATA_DIR/{member}.key`.
fn governance_config(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let mut text = String::new();
    for (member, role) in SANDBOX_MEMBERS {
        let path = data_dir.join(format!("{member}.key"));
        let key = ledger::node::load_or_create_key(&path)?;
        text.push_str(&format!(
            "[[governance.members]]\nid = \"{member}\"\nrole = \"{role}\"\npublic_key = \"{}\"\n\n",
            hex::encode(key.verifying_key().to_bytes())
        ));
    }
    text.push_str(
        "[governance.constitution.default]\nthreshold = \"majority\"\n\n\
         [governance.constitution.rules.set_constitution]\nthreshold = \"unanimity\"\nauditors_vote = true\n",
    );
    Ok(text)
}

/// The ledger nodes' addresses: chosen on the first run and kept in `DATA_DIR/FILE` (client
/// ports in `nodes.json`, raft ports in `raft_nodes.json`), since the raft membership a data
/// directory holds names them (a restart on new ports finds no quorum).
fn node_addresses(data_dir: &std::path::Path, file: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let path = data_dir.join(file);
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        return serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()));
    }
    let members: Vec<(u64, String)> =
        (1..=LEDGER_NODES).map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?)))).collect::<anyhow::Result<_>>()?;
    std::fs::write(&path, serde_json::to_string_pretty(&members)?)?;
    Ok(members)
}

/// The sandbox's members at work: the supplier proposes, the grid operator approves (the
/// default rule, a majority of the two voting members, passes it on that second approval).
struct Consortium {
    http: reqwest::Client,
    leader_url: String,
    data_dir: std::path::PathBuf,
}

impl Consortium {
    /// Waits until the operator's genesis has handed the ledger to the members.
    /// `http` reaches the ledger (over TLS it trusts the service's nodes).
    async fn wait_governed(
        data_dir: &std::path::Path,
        leader_url: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let deadline = std::time::Instant::now() + GOVERNANCE_WAIT_MAX;
        loop {
            let view: Result<ledger::gov_api::ConstitutionView, reqwest::Error> =
                async { http.get(format!("{leader_url}/v1/gov/constitution")).send().await?.json().await }.await;
            match view {
                Ok(view) if view.governed => break,
                _ if std::time::Instant::now() > deadline => {
                    bail!("governance did not start within {GOVERNANCE_WAIT_MAX:?}: see the log")
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        Ok(Consortium { http, leader_url: leader_url.to_string(), data_dir: data_dir.to_path_buf() })
    }

    /// Proposes `actions` as the supplier, approves them as the grid operator; the proposal id
    /// once accepted.
    async fn pass(&self, title: &str, actions: Vec<domain::tx::AdminAction>) -> anyhow::Result<String> {
        use domain::gov::{GovAct, MemberId, Proposal, SignedGov};
        let view: ledger::gov_api::ConstitutionView =
            self.http.get(format!("{}/v1/gov/constitution", self.leader_url)).send().await?.json().await?;
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        let expires_at = domain::ids::UnixSeconds(view.ledger_time_ms.div_euclid(1_000) + 86_400);
        let proposal = Proposal { title: title.into(), nonce, expires_at, actions };
        let key = |member: &str| ledger::node::read_signing_key(&self.data_dir.join(format!("{member}.key")));
        let supplier = MemberId::new("supplier")?;
        let id = proposal.id(&supplier);
        let propose = SignedGov::sign(supplier, GovAct::Propose(proposal), &key("supplier")?);
        crate::gov::submit_to(&self.http, &self.leader_url, &propose).await?;
        let vote = SignedGov::sign(MemberId::new("grid")?, GovAct::Vote { proposal: id, approve: true }, &key("grid")?);
        let answer = crate::gov::submit_to(&self.http, &self.leader_url, &vote).await?;
        let record = answer.proposal.map(|proposal| proposal.record);
        anyhow::ensure!(
            record.as_ref().map(|record| record.status) == Some(ledger::governance::Status::Accepted),
            "proposal {id} ({title}) was not accepted: {record:?}"
        );
        Ok(id.to_string())
    }
}

/// How long the sandbox waits for its admin configuration to hand the ledger to the members.
const GOVERNANCE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(120);

/// Prints each time the frozen fleet (`--intervals N`) stops, and how to step it.
async fn announce_freezes(mut frozen: tokio::sync::watch::Receiver<Option<firmware_sim::SimSummary>>) {
    while frozen.changed().await.is_ok() {
        let Some(summary) = *frozen.borrow_and_update() else { continue };
        println!(
            "the fleet published {} intervals ({} readings) and is frozen; serving until interrupted \
             (`kill -USR1 {}` publishes one more interval)",
            summary.intervals,
            summary.published,
            std::process::id()
        );
    }
}

/// SIGUSR1 grants the frozen fleet one more interval.
async fn step_on_signal(steps: tokio::sync::watch::Sender<u64>) {
    let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) else {
        tracing::warn!("SIGUSR1 cannot be handled here; the frozen fleet cannot be stepped");
        return;
    };
    while signal.recv().await.is_some() {
        steps.send_modify(|granted| *granted += 1);
        println!("step: the fleet publishes one more interval");
    }
}
