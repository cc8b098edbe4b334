//! `wattle`: one command for every Wattle process, plus the sandbox that runs them all.

mod bench;
mod bench_billing;
mod bench_gateway;
mod bench_settle;
mod bench_state;
mod broker;
mod cli;
mod gov;
mod process;
mod progress;
mod quarantine_cli;
mod recovery_cli;
mod sandbox;
mod sandbox_tariff;
mod tariff_cli;
mod token_cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use domain::ids::GatewayId;

use crate::cli::{parse_host_port, shutdown_signal, write_ready_file, ClockArgs};
use crate::quarantine_cli::{list_quarantine, release_quarantine, QuarantineAction, QuarantineCommand};
use crate::tariff_cli::{tariff_check, tariff_publish, TariffCommand};

/// Wattle: signed smart-meter readings, verified at the edge, settled on a replicated ledger,
/// billed to the cent.
#[derive(Debug, Parser)]
#[command(name = "wattle", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything locally: an embedded MQTT broker, a ledger node, a gateway, billing and a
    /// fleet of simulated meters in accelerated time.
    Sandbox(sandbox::SandboxArgs),
    /// Run a ledger node (openraft over RocksDB) serving the ledger's client API, or
    /// `wattle node endorse` to endorse a node's signing key with the service key.
    Node(NodeCommand),
    /// Check a receipt offline: `wattle receipt verify FILE --service-key HEX [--claims FILE]`.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Audit a stopped node's data directory, read-only, trusting only the operator and service
    /// keys given: re-verify every meter signature, re-execute settlement, recompute every hash
    /// and signature, compare with the node's state. Names the first entry (log index and
    /// transaction id) that does not match; exits 1 if one does not.
    Audit {
        /// The node's data directory, opened read-only (nothing is created or written).
        data_dir: PathBuf,
        /// The operator's public key (64 hex characters, or a file holding them), from a source
        /// you trust: every admin transaction that took effect must be signed by it.
        #[arg(long)]
        operator_key: String,
        /// The service's public key (64 hex characters, or a file holding them), from a source
        /// you trust: every endorsement must be its own, every root signer endorsed by it.
        #[arg(long)]
        service_key: String,
        /// Members' recovery shares (`wattle recovery split`) to open the sealed database with,
        /// instead of the ledger secrets the data directory keeps (repeat: --share A --share B).
        #[arg(long = "share")]
        shares: Vec<PathBuf>,
    },
    /// Disaster recovery of the ledger secrets, k of n members' shares (docs/operations.md):
    /// `wattle recovery split` on a node that holds them, `wattle recovery restore` after a loss.
    #[command(subcommand)]
    Recovery(recovery_cli::RecoveryCommand),
    /// Run an edge gateway: MQTT and Modbus in, verification, durable outbox, forwarding to the
    /// ledger, every batch signed with the gateway's key; or `wattle gateway token issue|revoke|list`
    /// for the operators' tokens its quarantine endpoints admit.
    Gateway(GatewayCommand),
    /// List a running gateway's quarantine: every rejected reading with its reason; or
    /// `wattle quarantine release` to re-submit held and unverified readings through its checks.
    Quarantine(QuarantineCommand),
    /// Run the billing service: customers' running bills, usage with costs and invoices over
    /// HTTP, for bearer tokens from `wattle token`.
    Billing(BillingArgs),
    /// Issue, revoke and list the bearer tokens billing admits (customers' and operators').
    #[command(subcommand)]
    Token(token_cli::TokenCommand),
    /// Run a fleet of simulated meters that publish signed readings over MQTT.
    Sim(SimArgs),
    /// Measure the platform: `wattle bench ledger`, `wattle bench gateway` (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Change the ledger cluster's membership (operator-signed admin transactions).
    Cluster(ClusterArgs),
    /// Run the ledger cluster's deterministic simulation: replicas in one process on virtual time,
    /// with crashes, message loss, delays and partitions from a seed, checking every invariant after
    /// every step. Prints one line per seed; a failure names its seed and how to replay it.
    Simulate(SimulateArgs),
    /// Tariff versions (docs/tariffs.md): `wattle tariff check FILE.toml` validates one and
    /// prints what it charges and the digest of its canonical form.
    #[command(subcommand)]
    Tariff(TariffCommand),
    /// Consortium governance (docs/governance.md): `wattle gov propose FILE | vote ID
    /// --approve/--reject | withdraw ID | list | show ID | constitution`, signed with a member's
    /// key file.
    Gov(gov::GovArgs),
    /// Export a simulator's ground truth (`wattle sim --truth-out FILE`) as CSV, one row per meter
    /// and interval: meter_id, interval start and end (UTC), import and export Wh measured, fault
    /// injected. Anyone can recompute a bill from it outside Wattle.
    TruthCsv {
        /// The truth file the simulator wrote.
        truth: PathBuf,
        /// Write the CSV here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Create an Ed25519 secret key file (for the operator or a gateway); prints the public key.
    Keygen {
        /// Where to write the secret key (64 hex characters; created with mode 0600, an existing
        /// file is never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// The first seed to run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many consecutive seeds to run, from --seed.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Workload and fault steps per seed (then the cluster heals and must converge).
    #[arg(long, default_value_t = ledger::simulation::STEPS_DEFAULT)]
    steps: u32,
    /// Replicas in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Plant the dedup-off bug; the run must then fail (it proves the checks work).
    #[arg(long)]
    canary: bool,
    /// Print every action and observation of every step.
    #[arg(long)]
    trace: bool,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct NodeCommand {
    #[command(subcommand)]
    action: Option<NodeAction>,
    #[command(flatten)]
    run: NodeArgs,
}

#[derive(Debug, Subcommand)]
enum NodeAction {
    /// Endorse a node's signing key with the service key (an operator-signed admin
    /// transaction); receipts carry the endorsement.
    Endorse {
        /// Any ledger node's URL (followers forward the admin transaction).
        #[arg(long)]
        ledger: String,
        /// The URL of the node whose key to endorse (its key is read from its /healthz).
        #[arg(long)]
        node: String,
        /// The service's secret key file (64 hex characters).
        #[arg(long)]
        service_key: PathBuf,
        /// The operator's secret key file that signs the admin transaction.
        #[arg(long)]
        operator_key: PathBuf,
        /// Days the endorsement holds, from the ledger's clock (its period starts a day earlier
        /// to cover roots the node signed while waiting); receipts of roots signed outside it do
        /// not verify. Renew before it ends: earlier endorsements are kept for older receipts.
        #[arg(long, default_value_t = ledger::endorsements::VALID_DAYS_DEFAULT, conflicts_with = "no_expiry")]
        valid_days: u32,
        /// Endorse without a period (valid until governance revokes the key), as before periods
        /// existed.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Print the service key's endorsement of a node's id and key, made offline (no ledger
    /// needed): give it to the node as `--endorsement`, with `--peer-service-key`, so its peers
    /// take its raft requests. Printed as HEX:NOT_BEFORE_MS:NOT_AFTER_MS (its period, by the wall
    /// clock), or bare HEX with `--no-expiry`.
    Endorsement {
        /// The node's id in the cluster.
        #[arg(long)]
        node_id: u64,
        /// The node's public key (64 hex characters; `wattle keygen` prints it).
        #[arg(long)]
        node_key: String,
        /// The service's secret key file (64 hex characters).
        #[arg(long)]
        service_key: PathBuf,
        /// Days the endorsement holds from now; the node refuses to start outside them and its
        /// peers refuse its raft requests (`expired_endorsement`).
        #[arg(long, default_value_t = ledger::endorsements::VALID_DAYS_DEFAULT, conflicts_with = "no_expiry")]
        valid_days: u32,
        /// An endorsement without a period (valid until revoked).
        #[arg(long)]
        no_expiry: bool,
    },
    /// Print the code measurement a node attests (virtual attestation: the SHA-256 of the
    /// executable), for an `accept_measurement` proposal: nodes whose measurement governance has
    /// not accepted are not handed the ledger secrets and cannot join.
    Measurement {
        /// The executable to measure; default: this `wattle` binary.
        #[arg(long)]
        executable: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ReceiptCommand {
    /// Verify a receipt: its canonical bytes (GET /v1/receipts/{tx_id}) or its JSON form
    /// (GET /v1/receipts/{tx_id}?format=json).
    Verify {
        /// The receipt file.
        file: PathBuf,
        /// The service's public key (64 hex characters, or a file holding them), from a source
        /// you trust.
        #[arg(long)]
        service_key: String,
        /// The claims document the receipt binds (GET /v1/transactions/{tx_id}/claims); its
        /// SHA-256 must equal the receipt's claims digest.
        #[arg(long)]
        claims: Option<PathBuf>,
        /// Also refuse the receipt if the ledger's current record (GET /v1/config, `revoked_nodes`)
        /// says the consortium revoked the key that signed it. Offline, a verifier learns of
        /// revocations from that list however it obtains it (docs/operations.md).
        #[arg(long)]
        ledger: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct NodeArgs {
    /// This node's id in the cluster.
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// Directory for the node's RocksDB database and snapshots.
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Address to serve the client API on (port 0: pick a free one); also raft RPCs unless
    /// `--raft-listen` gives them a port of their own.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Serve raft (and node-to-node traffic) on this address only, off the client port, so a
    /// firewall can open it to the other nodes alone; `--init-members` then names these
    /// addresses.
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// Initialise a new single-node cluster if this node was never initialised.
    #[arg(long, conflicts_with = "init_members")]
    bootstrap: bool,
    /// Initialise a new cluster of these voters if never initialised, as ID=HOST:PORT,...
    /// (give the same list to every node; the lowest id initialises, the others wait).
    #[arg(long, value_delimiter = ',', value_parser = parse_member)]
    init_members: Vec<(u64, String)>,
    /// Admin configuration (tariff, meter registries) to load as signed admin transactions.
    #[arg(long)]
    admin_config: Option<PathBuf>,
    /// Operator secret key file that signs the admin transactions.
    #[arg(long)]
    operator_key: Option<PathBuf>,
    /// Write {"address": ...} here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Build a snapshot, and purge the log behind it, after this many entries.
    #[arg(long, default_value_t = ledger::limits::SNAPSHOT_AFTER_ENTRIES_DEFAULT)]
    snapshot_after_entries: u64,
    /// This node's Ed25519 key for signing Merkle roots (64 hex characters); created as
    /// DATA_DIR/node.key when not given. Endorse it with `wattle node endorse`.
    #[arg(long)]
    node_key: Option<PathBuf>,
    /// While entries are unsigned, the leader signs the Merkle root this often (ms); 0 turns
    /// signature transactions off (benchmarks only: clients then get no receipts).
    #[arg(long, default_value_t = 50)]
    signature_interval_ms: u64,
    /// Authenticate raft peers: take raft requests only from nodes whose key this service
    /// public key (64 hex characters) endorsed, and sign this node's own with `--endorsement`.
    /// Without it raft requests are not authenticated (a single-operator test cluster).
    #[arg(long, requires = "endorsement")]
    peer_service_key: Option<String>,
    /// The service key's endorsement of this node's id and key, from `wattle node endorsement`
    /// (128 hex characters, then `:NOT_BEFORE_MS:NOT_AFTER_MS` for one with a period).
    #[arg(long, requires = "peer_service_key")]
    endorsement: Option<String>,
    /// Serve both ports over TLS 1.3 with a certificate carrying this node's endorsement, and
    /// reach peers over TLS trusting only nodes the service key endorses: the default of a node
    /// given `--peer-service-key` (this flag only says so). Clients then use https:// and trust
    /// the service key (`--ledger-service-key`, WATTLE_LEDGER_SERVICE_KEY). Every node of a
    /// cluster runs with TLS or none does.
    #[arg(long, requires = "endorsement")]
    tls: bool,
    /// An authenticated node without TLS: raft bodies stay sealed and signed, but responses and
    /// client traffic (customers' data to billing) cross the network in the clear. Only for a
    /// network nobody else can read.
    #[arg(long, conflicts_with = "tls")]
    no_tls: bool,
    #[command(flatten)]
    clock: ClockArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Committed readings per second and commit latency of a ledger cluster with fsync, at several
    /// batch sizes, with this machine's raw limits measured in the same run.
    Ledger(bench::LedgerBenchArgs),
    /// Readings verified and durably stored per second, and per core, through the whole gateway,
    /// with bare batch verification of the same readings on one core measured in the same run.
    ///
    /// Starts mosquitto (from PATH; queue without limit, `--broker-inflight` in flight), one
    /// ledger node holding the fleet's registry, and `wattle gateway`, each as a child process.
    /// Pre-signs `--readings` readings of `--meters` simulated meters (deterministic), publishes
    /// them as the fleet does (QoS 1, JSON envelopes on wattle/v1/site-0/METER/reading) as fast as
    /// the gateway keeps up (at most `--window` ahead), and waits until the gateway has
    /// acknowledged every one to the broker, which it does only once the reading is decoded,
    /// batch-verified, checked against its meter's sequence and registers, and written to the
    /// RocksDB outbox with fsync. The gateway's MQTT connection runs through a relay in this
    /// process that counts those acknowledgements.
    ///
    /// Reports the wall time from the first publish to the last acknowledgement, the gateway
    /// process's CPU time over that span (from /proc/PID/stat), readings per gateway CPU-second
    /// (per core), and its ratio to bare ed25519-consensus batch verification of the same
    /// readings in batches of the gateway's size, on one core, measured before and after. Also
    /// measured bare: JSON and hex decoding, and RocksDB synced WriteBatches. Forwarding to the
    /// ledger runs concurrently, as in production; the time until the ledger committed every
    /// reading is reported too. Everything runs on this machine's cores together, so the wall
    /// rate depends on them all; the per-core figure much less.
    Gateway(bench_gateway::GatewayBenchArgs),
    /// State, snapshot and history size per meter and per reading, and receipt time, at store
    /// level: the real store over RocksDB (fsync on), fed committed entries as openraft applies
    /// them, without a cluster.
    State(bench_state::StateBenchArgs),
    /// The settlement engine on one core: billing months of 15-minute intervals priced by an
    /// example tariff and closed into statements, against bare checked kWh x price arithmetic.
    Settle(bench_settle::SettleBenchArgs),
    /// Reading-to-bill latency on a running platform (the sandbox): from a meter's publish until
    /// its customer's running bill shows the reading, split at the ledger's apply.
    BillLatency(bench_billing::BillLatencyArgs),
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Any ledger node's client API base URL (followers forward to the leader).
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    ledger: String,
    /// Operator secret key file: membership changes are operator-signed admin transactions.
    #[arg(long)]
    operator_key: PathBuf,
    #[command(subcommand)]
    change: ClusterChange,
}

#[derive(Debug, Subcommand)]
enum ClusterChange {
    /// Add a node as a learner: it receives the log (or a snapshot) but does not vote yet.
    AddNode {
        #[arg(long)]
        node_id: u64,
        /// The new node's HOST:PORT.
        #[arg(long)]
        address: SocketAddr,
    },
    /// Make exactly these nodes the voters, e.g. --voters 1,2,3,4.
    SetVoters {
        #[arg(long, value_delimiter = ',', required = true)]
        voters: Vec<u64>,
    },
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct GatewayCommand {
    #[command(subcommand)]
    action: Option<GatewayAction>,
    #[command(flatten)]
    run: GatewayArgs,
}

#[derive(Debug, Subcommand)]
enum GatewayAction {
    /// Issue, revoke and list the operators' bearer tokens of a gateway (kept as hashes in its
    /// token file, `--tokens`): `GET /v1/quarantine` and its release admit only them.
    #[command(subcommand)]
    Token(token_cli::GatewayTokenCommand),
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// TOML configuration file: the settings below plus Modbus devices (`[[modbus]]`) and
    /// register maps (`[modbus_maps.NAME]`); see docs/gateway.md. Command-line values win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This gateway's id (also its MQTT client id suffix: keep it stable across restarts so the
    /// broker keeps its session). Default gw-1.
    #[arg(long)]
    gateway_id: Option<GatewayId>,
    /// Directory for the outbox, quarantine and tracking state (RocksDB) and the gateway key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// MQTT broker, host:port. Default 127.0.0.1:1883.
    #[arg(long)]
    broker: Option<String>,
    /// Connect to the broker over TLS, trusting this CA certificate (PEM) for the broker's
    /// certificate, whose name must match the broker's host.
    #[arg(long)]
    broker_ca_file: Option<PathBuf>,
    /// The gateway's client certificate (PEM), for a broker that requires one
    /// (`require_certificate true` in mosquitto); needs `--broker-key-file`.
    #[arg(long, requires = "broker_key_file")]
    broker_cert_file: Option<PathBuf>,
    /// The key of `--broker-cert-file` (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, requires = "broker_cert_file")]
    broker_key_file: Option<PathBuf>,
    /// Ledger nodes' client API base URLs (repeat or separate with commas); any node will do.
    /// Default http://127.0.0.1:7000.
    #[arg(long, value_delimiter = ',')]
    ledger: Vec<String>,
    /// Address for /healthz, /metrics and /v1/quarantine. Default 127.0.0.1:7100.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The operators' token file: hashes of the tokens `wattle gateway token issue` issued
    /// (created empty if missing). Without one, /v1/quarantine and its release refuse every call.
    #[arg(long)]
    tokens: Option<PathBuf>,
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Largest power a metering point can carry (kW): a reading with more energy than that
    /// power over its interval is quarantined as implausible_energy. Default 1,000.
    #[arg(long)]
    max_power_kw: Option<u64>,
    /// How far past the gateway's clock a reading's interval may end (s) before it is
    /// quarantined as clock_future. Skew inside the window is kept as the meter reported it.
    /// Default 1,800.
    #[arg(long)]
    clock_ahead_s: Option<i64>,
    /// MQTT keepalive (s). Default 30.
    #[arg(long)]
    mqtt_keepalive_s: Option<u64>,
    /// Interval of gateway-attested readings of unsigned (SDM630) meters (s). Default 900.
    #[arg(long)]
    attest_interval_s: Option<i64>,
    /// Disk budget of the database (MiB): above it the gateway stops taking readings and
    /// recovers them by gap recovery once below. Default 8,192.
    #[arg(long)]
    disk_budget_mb: Option<u64>,
    /// The gateway's Ed25519 key (64 hex characters); default DATA_DIR/gateway.key, created on
    /// first start. It signs every batch sent to the ledger and attested readings.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The ledger's service public key (64 hex characters): reach `https://` ledger URLs
    /// trusting only nodes it endorses (nodes run with `--tls`).
    #[arg(long, env = cli::LEDGER_SERVICE_KEY_ENV, value_parser = cli::parse_service_key)]
    ledger_service_key: Option<[u8; 32]>,
    #[command(flatten)]
    clock: ClockArgs,
}

#[derive(Debug, clap::Args)]
struct BillingArgs {
    /// Address to serve bills on.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// The ledger's client API base URL.
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    ledger: String,
    /// Billing's secret key file (`wattle keygen`), registered with the ledger as a reader by a
    /// `register_reader` proposal: nodes that authenticate serve customers' data only to it.
    #[arg(long)]
    ledger_key: Option<PathBuf>,
    /// The ledger's service public key (64 hex characters): reach an `https://` ledger trusting
    /// only nodes it endorses (nodes run with `--tls`), so customers' data travels encrypted.
    #[arg(long, env = cli::LEDGER_SERVICE_KEY_ENV, value_parser = cli::parse_service_key)]
    ledger_service_key: Option<[u8; 32]>,
    /// Billing's read model: `sqlite://PATH?mode=rwc` (embedded, the default: a file in the
    /// working directory) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`. Deleting it loses
    /// nothing: billing rebuilds it from the ledger.
    #[arg(long, default_value = billing::DATABASE_DEFAULT)]
    database: String,
    /// The token file: hashes of the bearer tokens `wattle token issue` (or an operator through
    /// `POST /v1/tokens`) issued; created empty if missing. Kept apart from the database, which
    /// may be deleted and rebuilt.
    #[arg(long, default_value = "billing-tokens.json")]
    tokens: PathBuf,
    /// Requests per second one customer's token may make (twice as many at once; an operator's
    /// token 20 times as many); beyond, 429.
    #[arg(long, default_value_t = billing::auth::RATE_PER_TOKEN_DEFAULT)]
    rate_per_token: u32,
    /// Also sign customers in with JWTs of the utility's OpenID Connect provider: its issuer
    /// (`iss`, exactly as it writes it). Needs --oidc-audience and --oidc-jwks.
    #[arg(long, requires_all = ["oidc_audience", "oidc_jwks"])]
    oidc_issuer: Option<String>,
    /// Billing's audience (`aud`) at the provider.
    #[arg(long, requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// The provider's signing keys (JWKS): a file, or an http:// URL; re-read hourly and when a
    /// token names an unknown key.
    #[arg(long, requires = "oidc_issuer")]
    oidc_jwks: Option<String>,
    /// The JWT claim that names the customer the token reads.
    #[arg(long, default_value = "customer_id")]
    oidc_customer_claim: String,
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Number of meters.
    #[arg(long, default_value_t = 100)]
    meters: u32,
    /// Seed for meter keys, consumption and fault placement: the same seed and plan give the
    /// same fleet and byte-identical readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of sites (substation areas); meters are split into contiguous blocks.
    #[arg(long, default_value_t = 1)]
    sites: u32,
    /// MQTT connections per site (a data concentrator publishes for many meters).
    #[arg(long, default_value_t = 1)]
    connections_per_site: u32,
    /// Interval length in seconds: 60, 300, 900, 1800 or 3600; aligned to UTC.
    #[arg(long, default_value_t = 900, value_parser = parse_interval)]
    interval_s: i64,
    /// Start of the first interval (sequence 1), RFC 3339; default: the interval the clock is in.
    #[arg(long)]
    epoch: Option<chrono::DateTime<chrono::Utc>>,
    /// Stop after this many intervals (default: run until stopped).
    #[arg(long)]
    intervals: Option<u64>,
    /// MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Write the fleet's registry (meter id, key id, public key, customer) here.
    #[arg(long)]
    registry_out: Option<PathBuf>,
    /// Only write the registry, publish nothing.
    #[arg(long, requires = "registry_out")]
    registry_only: bool,
    /// Write the ground truth (compact binary, see firmware-sim/src/truth.rs) here.
    #[arg(long)]
    truth_out: Option<PathBuf>,
    /// Inject a fault: KIND:SHARE for a share of the fleet (e.g. bit-flip:0.01), or
    /// KIND@METER:SEQUENCE[:PARAM] for one meter index. Repeatable. Kinds: bit-flip, wrong-key,
    /// equivocation, duplicate, sequence-gap, clock-skew (PARAM seconds), unsynced-clock (PARAM
    /// intervals), counter-reset, rollover, impossible-jump (PARAM Wh), offline (PARAM intervals).
    #[arg(long = "fault")]
    faults: Vec<firmware_sim::FaultRequest>,
    /// Replay the fault plan of an earlier run (JSON from --fault-plan-out) instead of --fault.
    #[arg(long)]
    fault_plan: Option<PathBuf>,
    /// Write the fault plan actually used here.
    #[arg(long)]
    fault_plan_out: Option<PathBuf>,
    /// How many days of readings each meter remembers for backfill.
    #[arg(long, default_value_t = firmware_sim::limits::MEMORY_DAYS_DEFAULT)]
    memory_days: u32,
    /// After the last interval (--intervals), keep answering backfill commands this many
    /// seconds before exiting.
    #[arg(long, default_value_t = 0)]
    linger_s: u64,
    /// Before starting, measure bare Ed25519 signing on this machine and report the ratio at the end.
    #[arg(long)]
    measure_bare_signing: bool,
    /// Serve every site over Modbus TCP (SunSpec 1/203 plus the signed-reading blocks, SDM630 for
    /// legacy meters; docs/modbus.md): site N listens on this port + N, meters are unit ids 1...
    #[arg(long)]
    modbus_listen: Option<std::net::SocketAddr>,
    /// A meter index that is an unsigned legacy meter (SDM630 map over Modbus, nothing over MQTT).
    /// Repeatable.
    #[arg(long = "legacy-meter")]
    legacy_meters: Vec<u32>,
    /// BDEW standard load profile of the meters: h25 (households, dynamised by day of year) or
    /// g25 (commerce); scaled per meter by a yearly consumption (docs/simulator.md).
    #[arg(long, default_value = "h25")]
    profile: firmware_sim::load::Profile,
    /// Share of meters (0-1) with rooftop PV; they export around solar noon.
    #[arg(long, default_value_t = 0.2)]
    pv_share: f64,
    /// Site latitude in degrees (north positive), for the sun's position.
    #[arg(long = "latitude", default_value_t = 51.3, allow_negative_numbers = true)]
    latitude_deg: f64,
    /// Site longitude in degrees (east positive).
    #[arg(long = "longitude", default_value_t = 9.5, allow_negative_numbers = true)]
    longitude_deg: f64,
    /// Time zone of the load profiles' wall clock (IANA name).
    #[arg(long, default_value = "Europe/Berlin")]
    timezone: chrono_tz::Tz,
    #[command(flatten)]
    clock: ClockArgs,
}

async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.registry_out {
        firmware_sim::write_registry(path, args.seed, args.meters)?;
        tracing::info!(path = %path.display(), meters = args.meters, "registry written");
    }
    if args.registry_only {
        return Ok(());
    }
    let bare_signing = args.measure_bare_signing.then(|| firmware_sim::bare_signing_per_second(2.0));
    let (broker_host, broker_port) = parse_host_port(&args.broker)?;
    let fault_plan = match &args.fault_plan {
        Some(path) => Some(serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        )?),
        None => None,
    };
    let config = firmware_sim::SimConfig {
        meters: args.meters,
        seed: args.seed,
        sites: args.sites,
        connections_per_site: args.connections_per_site,
        interval_s: args.interval_s,
        epoch: args.epoch.map(|epoch| domain::ids::UnixSeconds(epoch.timestamp())),
        intervals: args.intervals,
        steps: None,
        broker_host,
        broker_port,
        truth_out: args.truth_out,
        faults: args.faults,
        fault_plan,
        memory_days: args.memory_days,
        linger: std::time::Duration::from_secs(args.linger_s),
        clock: args.clock.clock(),
        modbus_listen: args.modbus_listen,
        legacy_meters: args.legacy_meters.iter().copied().collect(),
        load: firmware_sim::load::LoadConfig {
            profile: args.profile,
            pv_share: args.pv_share,
            latitude_deg: args.latitude_deg,
            longitude_deg: args.longitude_deg,
            tz: args.timezone,
        },
    };
    let fleet = firmware_sim::build_fleet(&config)?;
    if let Some(path) = &args.fault_plan_out {
        std::fs::write(path, serde_json::to_string_pretty(&fleet.plan)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(
        meters = fleet.meters,
        sites = fleet.sites,
        faults = fleet.plan.faults.len(),
        epoch = fleet.epoch.0,
        "fleet starting"
    );
    tokio::select! {
        summary = firmware_sim::run(config, fleet) => {
            let summary = summary?;
            let rate = summary.published as f64 / summary.elapsed_s.max(1e-9);
            tracing::info!(published = summary.published, intervals = summary.intervals, backfilled = summary.backfilled, readings_per_s = format!("{rate:.0}"), "simulation finished");
            if let Some(before) = bare_signing {
                let after = firmware_sim::bare_signing_per_second(2.0);
                let bare = (before + after) / 2.0;
                println!(
                    "signed and published {rate:.0} readings/s; bare Ed25519 signing on one core {before:.0}/s before, {after:.0}/s after; ratio {:.2}",
                    rate / bare
                );
            }
        }
        _ = shutdown_signal() => tracing::info!("simulation stopped"),
    }
    Ok(())
}

fn parse_member(text: &str) -> Result<(u64, String), String> {
    let (id, address) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id = id.parse().map_err(|_| format!("{id:?} is not a node id"))?;
    address.parse::<SocketAddr>().map_err(|_| format!("{address:?} is not HOST:PORT"))?;
    Ok((id, address.to_string()))
}

fn parse_interval(text: &str) -> Result<i64, String> {
    let seconds: i64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if [60, 300, 900, 1_800, 3_600].contains(&seconds) {
        Ok(seconds)
    } else {
        Err("interval must be 60, 300, 900, 1800 or 3600 seconds".into())
    }
}

/// The default log filter of the services.
const LOG_FILTER_DEFAULT: &str = "info,openraft=error,rumqttd=off";

/// Structured logs to stderr, or to `file` (the sandbox keeps its terminal for the banner and
/// one progress line); `WATTLE_LOG` overrides the filter, `WATTLE_LOG_FORMAT=json` gives JSON lines.
fn init_logging(default_filter: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WATTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let writer = match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the log file {}", path.display()))?;
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(file.is_none());
    if std::env::var("WATTLE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.compact().init();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // openraft logs every lost message of the simulation as an error; they are its point.
    match cli.command {
        // The trace is the simulation's log; the nodes' own warnings (clients refused while a
        // node is down, equivocations the workload plants) only with WATTLE_LOG set.
        Command::Simulate(_) => init_logging("off", None)?,
        // The sandbox logs into a file in its data directory, which it creates first.
        Command::Sandbox(_) => {}
        _ => init_logging(LOG_FILTER_DEFAULT, None)?,
    }
    // The simulation runs its own single-threaded runtimes on virtual time.
    if let Command::Simulate(args) = cli.command {
        return simulate(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli.command))
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let config = ledger::simulation::SimConfig {
            seed,
            steps: args.steps,
            nodes: args.nodes,
            canary_dedup_off: args.canary,
            trace: args.trace,
            ..ledger::simulation::SimConfig::new(seed)
        };
        let report = ledger::simulation::run(&config)?;
        println!(
            "seed {seed}: ok, trace {} | {} steps, {:.1} s virtual, final index {}, max term {}, {} readings \
             accepted, {} submissions ({} replays, {} forwarded, {} not waiting, {} duplicates answered from \
             state), {} crashes, {} messages delivered, {} lost, {} snapshot chunks, signed to {}",
            &report.trace_hash[..16],
            report.steps,
            report.virtual_ms as f64 / 1000.0,
            report.final_index,
            report.max_term,
            report.readings_accepted,
            report.submissions,
            report.replays,
            report.forwarded,
            report.not_waiting,
            report.duplicates_unproposed,
            report.crashes,
            report.messages_delivered,
            report.messages_lost,
            report.snapshot_chunks,
            report.signed_index,
        );
    }
    println!("{} seeds passed in {:.1} s", args.seeds, started.elapsed().as_secs_f64());
    Ok(())
}

/// `--peer-service-key` and `--endorsement`, decoded.
fn peer_auth(service_key: Option<&str>, endorsement: Option<&str>) -> anyhow::Result<Option<ledger::node::PeerAuth>> {
    let (Some(service_key), Some(endorsement)) = (service_key, endorsement) else { return Ok(None) };
    let service_key = hex::decode(service_key.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .context("--peer-service-key: 64 hex characters")?;
    let (endorsement, validity) = ledger::endorsements::parse_endorsement(endorsement)
        .map_err(|reason| anyhow::anyhow!("--endorsement: {reason}"))?;
    Ok(Some(ledger::node::PeerAuth { service_key, endorsement, validity }))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Simulate(_) => unreachable!("handled before the runtime starts"),
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Node(NodeCommand {
            action:
                Some(NodeAction::Endorse { ledger: ledger_url, node, service_key, operator_key, valid_days, no_expiry }),
            ..
        }) => {
            let service = ledger::node::read_signing_key(&service_key)?;
            let operator = ledger::node::read_signing_key(&operator_key)?;
            let days = (!no_expiry).then_some(valid_days);
            let response = ledger::node::endorse_node(
                // The service key it signs with is the one the nodes' certificates carry.
                &cli::ledger_client(
                    &ledger_url,
                    Some(service.verifying_key().to_bytes()),
                    std::time::Duration::from_secs(30),
                )?,
                &ledger_url,
                &node,
                &service,
                &operator,
                days,
            )
            .await?;
            println!(
                "endorsed the key of {node} at log index {}; service public key {}",
                response.log_index,
                hex::encode(service.verifying_key().to_bytes())
            );
            Ok(())
        }
        Command::Node(NodeCommand {
            action: Some(NodeAction::Endorsement { node_id, node_key, service_key, valid_days, no_expiry }),
            ..
        }) => {
            let service = ledger::node::read_signing_key(&service_key)?;
            let node_key: [u8; 32] = hex::decode(node_key.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .context("--node-key: 64 hex characters")?;
            let validity =
                (!no_expiry).then(|| ledger::endorsements::period_from(domain::clock::wall_clock_now().0, valid_days));
            let endorsement = domain::receipt::endorse_for(&service, node_id, &node_key, validity);
            println!("{}", ledger::endorsements::format_endorsement(&endorsement, validity));
            Ok(())
        }
        Command::Node(NodeCommand { action: Some(NodeAction::Measurement { executable }), .. }) => {
            let measurement = match &executable {
                Some(path) => {
                    ledger::attestation::measure_file(path).with_context(|| format!("measuring {}", path.display()))?
                }
                None => ledger::attestation::measure_self().context("measuring this executable")?,
            };
            println!("{}", hex::encode(measurement));
            Ok(())
        }
        Command::Receipt(ReceiptCommand::Verify { file, service_key, claims, ledger }) => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // The JSON form opens with `{`; the canonical bytes with their tag `wattle.receipt\0`.
            let receipt = if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{') {
                domain::receipt::Receipt::from_json(&bytes)
                    .with_context(|| format!("{} is not a receipt's JSON form", file.display()))?
            } else {
                domain::receipt::Receipt::decode(&bytes)
                    .with_context(|| format!("{} is not a canonical receipt", file.display()))?
            };
            let service = ledger::audit::public_key_argument(&service_key).context("--service-key")?;
            let document = claims
                .as_ref()
                .map(|path| std::fs::read(path).with_context(|| format!("reading {}", path.display())))
                .transpose()?;
            receipt.verify(&service, document.as_deref()).context("the receipt does not verify")?;
            if let Some(ledger_url) = &ledger {
                // An https:// ledger is trusted by the same service key the receipt is checked with.
                let http = cli::ledger_client_trusting(Some(service), std::time::Duration::from_secs(30))?;
                let config: serde_json::Value =
                    http.get(format!("{ledger_url}/v1/config")).send().await?.error_for_status()?.json().await?;
                let signer_key = hex::encode(receipt.node_key);
                let revoked = config["revoked_nodes"]
                    .as_array()
                    .context("the ledger lists no revoked_nodes")?
                    .iter()
                    .any(|entry| {
                        entry["node_id"].as_u64() == Some(receipt.node_id) && entry["node_key"] == signer_key.as_str()
                    });
                anyhow::ensure!(
                    !revoked,
                    "the receipt does not verify: it is signed by node {}'s key {signer_key}, which the consortium revoked",
                    receipt.node_id
                );
            }
            let instant = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| format!("{ms} ms"), |at| at.to_rfc3339())
            };
            let when = match (receipt.signed_at, receipt.endorsement_validity) {
                (Some(at), Some(period)) => format!(
                    " at {}, inside its endorsement ({} to {})",
                    instant(at),
                    instant(period.not_before),
                    instant(period.not_after)
                ),
                (Some(at), None) => format!(" at {} (endorsed without expiry)", instant(at)),
                _ => " (endorsed without expiry)".to_string(),
            };
            println!(
                "receipt verifies: transaction {} is entry {} of a ledger of {} entries, root {} signed by node {}{when}{}",
                receipt.tx_id(),
                receipt.leaf_index,
                receipt.tree_size,
                hex::encode(receipt.root),
                receipt.node_id,
                if document.is_some() { "; the claims document matches" } else { "" }
            );
            Ok(())
        }
        Command::Audit { data_dir, operator_key, service_key, shares } => {
            let anchors = ledger::audit::TrustAnchors {
                operator_key: ledger::audit::public_key_argument(&operator_key).context("--operator-key")?,
                service_key: ledger::audit::public_key_argument(&service_key).context("--service-key")?,
            };
            let secrets = match shares.is_empty() {
                true => None,
                false => Some(recovery_cli::secrets_from_shares(&shares, &anchors.service_key).context("--share")?),
            };
            let store = ledger::audit::open_store(&data_dir, secrets).context("nothing was audited")?;
            let started = std::time::Instant::now();
            let result =
                ledger::audit::audit(&store, &anchors, |done, total| eprintln!("audit: {done} of {total} entries"));
            match result {
                Ok(report) => {
                    println!(
                        "audit passed: {} entries ({} transactions, {} meter signatures re-verified, {} signature \
                         transactions checked, {} admin transactions under the operator key, {} endorsements by \
                         the service key, {} governance acts re-decided, {} proposals accepted), {} state keys \
                         match, root {} ({:.1} s)",
                        report.entries,
                        report.transactions,
                        report.readings_verified,
                        report.signatures_checked,
                        report.admin_checked,
                        report.endorsements_checked,
                        report.governance_acts,
                        report.proposals_accepted,
                        report.state_keys_compared,
                        report.root.map(hex::encode).unwrap_or_else(|| "-".into()),
                        started.elapsed().as_secs_f64()
                    );
                    Ok(())
                }
                Err(failure) => {
                    println!("{failure}");
                    std::process::exit(1);
                }
            }
        }
        Command::Node(NodeCommand { action: None, run: args }) => {
            let node = ledger::node::start(ledger::node::NodeConfig {
                node_id: args.node_id,
                data_dir: args.data_dir.context("--data-dir is required")?,
                listen: args.listen,
                raft_listen: args.raft_listen,
                bootstrap: args.bootstrap,
                init_members: args.init_members,
                admin_config: args.admin_config,
                operator_key: args.operator_key,
                clock: args.clock.clock(),
                snapshot_after_entries: args.snapshot_after_entries,
                node_key: args.node_key,
                signature_interval: (args.signature_interval_ms > 0)
                    .then(|| std::time::Duration::from_millis(args.signature_interval_ms)),
                peer_auth: peer_auth(args.peer_service_key.as_deref(), args.endorsement.as_deref())?,
                measurement: None,
                seal: true,
                tls: args.tls || (args.peer_service_key.is_some() && !args.no_tls),
            })
            .await?;
            write_ready_file(args.ready_file.as_deref(), node.address)?;
            shutdown_signal().await;
            tracing::info!("stopping the ledger node");
            node.stop().await;
            Ok(())
        }
        Command::Gateway(GatewayCommand { action: Some(GatewayAction::Token(command)), .. }) => {
            token_cli::run_gateway(command)
        }
        Command::Gateway(GatewayCommand { action: None, run: args }) => {
            let file = match &args.config {
                Some(path) => gateway::config::FileConfig::load(path)?,
                None => gateway::config::FileConfig::default(),
            };
            let modbus = file.devices()?;
            let quarantine = file.quarantine();
            let broker = args.broker.or(file.broker).unwrap_or_else(|| "127.0.0.1:1883".into());
            let (broker_host, broker_port) = parse_host_port(&broker)?;
            let broker_tls = gateway::BrokerTls::from_files(
                args.broker_ca_file.or(file.broker_ca_file),
                args.broker_cert_file.or(file.broker_cert_file),
                args.broker_key_file.or(file.broker_key_file),
            )?;
            let ledger_urls = if args.ledger.is_empty() {
                file.ledger.unwrap_or_else(|| vec!["http://127.0.0.1:7000".into()])
            } else {
                args.ledger
            };
            let data_dir =
                args.data_dir.or(file.data_dir).context("--data-dir (or data_dir in --config) is required")?;
            let gateway = gateway::start(gateway::GatewayConfig {
                gateway_id: args.gateway_id.or(file.gateway_id).map_or_else(|| GatewayId::new("gw-1"), Ok)?,
                data_dir,
                broker_host,
                broker_port,
                broker_tls,
                ledger_urls,
                listen: args.listen.or(file.listen).unwrap_or_else(|| ([127, 0, 0, 1], 7100).into()),
                clock: args.clock.clock(),
                max_power_w: args
                    .max_power_kw
                    .or(file.max_power_kw)
                    .map_or(gateway::limits::MAX_POWER_W_DEFAULT, |kw| kw.saturating_mul(1_000)),
                clock_ahead_s_max: args
                    .clock_ahead_s
                    .or(file.clock_ahead_s)
                    .unwrap_or(gateway::limits::CLOCK_AHEAD_S_MAX_DEFAULT),
                mqtt_keepalive: std::time::Duration::from_secs(
                    args.mqtt_keepalive_s.or(file.mqtt_keepalive_s).unwrap_or(30).max(1),
                ),
                modbus,
                attest_interval_s: args
                    .attest_interval_s
                    .or(file.attest_interval_s)
                    .unwrap_or(gateway::limits::ATTEST_INTERVAL_S_DEFAULT),
                key_file: args.key_file.or(file.key_file),
                disk_budget_bytes: args
                    .disk_budget_mb
                    .or(file.disk_budget_mb)
                    .map_or(gateway::limits::DISK_BUDGET_BYTES_DEFAULT, |mb| mb.saturating_mul(1024 * 1024)),
                quarantine,
                tokens_path: args.tokens.or(file.tokens),
                ledger_service_key: match (args.ledger_service_key, file.ledger_service_key.as_deref()) {
                    (Some(key), _) => Some(key),
                    (None, None) => None,
                    (None, Some(text)) => Some(
                        cli::parse_service_key(text).map_err(|error| anyhow::anyhow!("ledger_service_key: {error}"))?,
                    ),
                },
            })
            .await?;
            write_ready_file(args.ready_file.as_deref(), gateway.address)?;
            shutdown_signal().await;
            tracing::info!("stopping the gateway");
            gateway.stop().await;
            Ok(())
        }
        Command::Billing(args) => {
            let billing = billing::start(billing::BillingConfig {
                listen: args.listen,
                ledger_url: args.ledger,
                ledger_key: args.ledger_key.as_deref().map(ledger::node::read_signing_key).transpose()?,
                ledger_service_key: args.ledger_service_key,
                database_url: args.database,
                tokens_path: args.tokens,
                rate_per_token: args.rate_per_token,
                oidc: args.oidc_issuer.clone().map(|issuer| billing::oidc::OidcConfig {
                    issuer,
                    audience: args.oidc_audience.clone().unwrap_or_default(),
                    jwks: args.oidc_jwks.clone().unwrap_or_default(),
                    customer_claim: args.oidc_customer_claim.clone(),
                }),
            })
            .await?;
            write_ready_file(args.ready_file.as_deref(), billing.address)?;
            shutdown_signal().await;
            billing.stop().await;
            Ok(())
        }
        Command::Sim(args) => run_sim(args).await,
        Command::Tariff(TariffCommand::Check { file, json }) => tariff_check(&file, json),
        Command::Gov(args) => gov::run(args).await,
        Command::Tariff(TariffCommand::Publish { file, ledger, operator_key }) => {
            tariff_publish(&file, &ledger, &operator_key).await
        }
        Command::TruthCsv { truth, out } => {
            let truth = firmware_sim::Truth::read(&truth)?;
            match out {
                Some(path) => {
                    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    truth.write_csv(file)?;
                    eprintln!("{} rows written to {}", truth.records.len(), path.display());
                    Ok(())
                }
                None => truth.write_csv(std::io::stdout().lock()),
            }
        }
        Command::Quarantine(QuarantineCommand { action: Some(QuarantineAction::Release(args)), .. }) => {
            release_quarantine(args).await
        }
        Command::Quarantine(QuarantineCommand { action: None, list }) => list_quarantine(list).await,
        Command::Bench(BenchCommand::Ledger(args)) => bench::ledger(args).await,
        Command::Bench(BenchCommand::Gateway(args)) => bench_gateway::gateway(args).await,
        Command::Bench(BenchCommand::State(args)) => bench_state::state(args).await,
        Command::Bench(BenchCommand::Settle(args)) => bench_settle::settle(args),
        Command::Bench(BenchCommand::BillLatency(args)) => bench_billing::bill_latency(args).await,
        Command::Cluster(args) => {
            let key = ledger::node::read_signing_key(&args.operator_key)?;
            let http = cli::ledger_client(&args.ledger, None, std::time::Duration::from_secs(30))?;
            let config: serde_json::Value =
                http.get(format!("{}/v1/config", args.ledger)).send().await?.error_for_status()?.json().await?;
            let nonce = config["admin_nonce"].as_u64().context("admin_nonce in /v1/config")? + 1;
            let action = match args.change {
                ClusterChange::AddNode { node_id, address } => {
                    domain::tx::AdminAction::AddNode { node_id, address: address.to_string() }
                }
                ClusterChange::SetVoters { voters } => domain::tx::AdminAction::SetVoters { voters },
            };
            let admin = domain::tx::SignedAdmin::sign(nonce, action, &key);
            let response = ledger::node::submit_admin_to(&http, &args.ledger, &admin).await?;
            if let Some(reason) = response.refused {
                anyhow::bail!("the ledger refused the change: {reason}");
            }
            println!("committed at log index {}", response.log_index);
            Ok(())
        }
        Command::Recovery(command) => recovery_cli::run(command),
        Command::Token(command) => token_cli::run(command),
        Command::Keygen { out } => {
            let secret: [u8; 32] = rand::random();
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            ledger::node::write_secret(&out, &hex::encode(secret))?;
            println!("{}", hex::encode(key.verifying_key().to_bytes()));
            Ok(())
        }
    }
}
