//! `wattle bench ledger`: committed readings per second and commit latency of a three-node
//! ledger with fsync, at several batch sizes, against the raw limits of this machine measured in
//! the same run (bare batch verification, bare RocksDB synced WriteBatch).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::api::{SubmitReadings, SubmitReadingsResponse};
use domain::clock::Clock;
use domain::ids::{GatewayId, KeyId, Sequence, UnixSeconds};
use domain::reading::{Envelope, Reading, SignedReading};

/// Options of `wattle bench ledger`.
#[derive(Debug, clap::Args)]
pub struct LedgerBenchArgs {
    /// Ledger nodes in the cluster (in this process, each with its own RocksDB and HTTP port).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Readings per request (one request becomes one raft entry).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    batch_sizes: Vec<usize>,
    /// Readings submitted per batch size (rounded up to whole batches; at least 200 requests for latency).
    #[arg(long, default_value_t = 30_000)]
    readings: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Where to keep the nodes' databases (a temporary directory by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Signature transactions (Merkle roots signed every 50 ms): measure with them, without them,
    /// or both in one run (a fresh cluster each). Clients wait for a signature when they are on.
    #[arg(long, value_enum, default_value = "both")]
    signatures: SignatureMode,
    /// Meters registered (two admin transactions each before the run starts).
    #[arg(long, default_value_t = 1_000)]
    meters: u32,
    /// Seconds each raw limit (bare verification, bare RocksDB) is measured for.
    #[arg(long, default_value_t = 2.0)]
    bare_seconds: f64,
    /// Confidentiality (issue 15) as the sandbox runs it: databases sealed under the ledger
    /// secrets, raft requests signed by endorsed node keys, checked by every receiver and sealed
    /// (`ledger::sealed_kv`, `ledger::peer_auth`, `ledger::raft_channel`), every connection
    /// (node to node, and the load client's) over TLS (`ledger::tls`); off: everything in the
    /// clear and unauthenticated, plain HTTP; both: one fresh cluster each, in one run.
    #[arg(long, value_enum, default_value = "on")]
    confidentiality: SignatureMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureMode {
    On,
    Off,
    Both,
}

impl SignatureMode {
    fn modes(self) -> &'static [bool] {
        match self {
            SignatureMode::On => &[true],
            SignatureMode::Off => &[false],
            SignatureMode::Both => &[true, false],
        }
    }
}

fn reading(meter: u32, sequence: u64) -> Reading {
    let start = UnixSeconds(1_767_225_600 + 900 * sequence as i64);
    let reading = Reading::import_interval(
        firmware_sim::meter_id(meter),
        KeyId(1),
        Sequence(sequence),
        start,
        1_000 * sequence,
        250,
    );
    Reading { firmware: firmware_sim::SIM_FIRMWARE, ..reading }
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index].as_secs_f64() * 1_000.0
}

/// Bare batch verification (ed25519-consensus) of `batch` signatures, per second.
fn bare_batch_verify_per_second(signed: &[(SignedReading, [u8; 32])], batch: usize, limit: Duration) -> f64 {
    let started = Instant::now();
    let mut verified = 0usize;
    let mut rng = rand::thread_rng();
    while started.elapsed() < limit {
        for chunk in signed.chunks(batch.max(1)) {
            let outcomes = domain::verify::verify_batch(chunk.to_vec(), &mut rng);
            verified += outcomes.len();
            if started.elapsed() >= limit {
                break;
            }
        }
    }
    verified as f64 / started.elapsed().as_secs_f64()
}

/// Bare RocksDB: synced WriteBatches of `batch` puts of 180 bytes, puts per second.
fn bare_rocksdb_synced_puts_per_second(dir: &Path, batch: usize, limit: Duration) -> anyhow::Result<f64> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    let db = rocksdb::DB::open(&options, dir)?;
    let mut write_options = rocksdb::WriteOptions::default();
    write_options.set_sync(true);
    let value = [42u8; 180];
    let started = Instant::now();
    let mut key = 0u64;
    while started.elapsed() < limit {
        let mut write = rocksdb::WriteBatch::default();
        for _ in 0..batch.max(1) {
            write.put(key.to_be_bytes(), value);
            key += 1;
        }
        db.write_opt(write, &write_options)?;
    }
    Ok(key as f64 / started.elapsed().as_secs_f64())
}

pub async fn ledger(args: LedgerBenchArgs) -> anyhow::Result<()> {
    let temporary = tempfile::Builder::new().prefix("wattle-bench-").tempdir()?;
    let base = args.data_dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let mut table = Vec::new();
    for &confidential in args.confidentiality.modes() {
        for &signatures in args.signatures.modes() {
            let dir = base.join(format!(
                "{}-{}",
                if confidential { "sealed" } else { "clear" },
                if signatures { "with-signatures" } else { "without-signatures" }
            ));
            table.extend(ledger_cluster(&args, &dir, (signatures, confidential)).await?);
        }
    }
    println!("| sealed + authenticated | signatures | batch size | readings | requests | committed readings/s | p50 ms | p99 ms | bare batch verify /s | bare RocksDB synced puts /s | ratio to verify | ratio to fsync |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in table {
        println!("{row}");
    }
    Ok(())
}

/// Runs every batch size against a fresh cluster; returns the table rows.
async fn ledger_cluster(
    args: &LedgerBenchArgs,
    dir: &std::path::Path,
    (signatures, confidential): (bool, bool),
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let seed = 3;
    let operator_key = dir.join("operator.key");
    std::fs::write(&operator_key, hex::encode(rand::random::<[u8; 32]>()))?;
    anyhow::ensure!(args.meters > 0, "--meters must be at least 1");
    let meters = args.meters;
    firmware_sim::write_registry(&dir.join("meters.json"), seed, meters)?;
    std::fs::write(
        dir.join("ledger.toml"),
        "registries = [\"meters.json\"]\n[tariff]\ncurrency = \"EUR\"\nprice_per_kwh = \"0.30\"\n",
    )?;
    // All listeners are held until every port is picked, so no two nodes get the same one.
    let listeners: Vec<std::net::TcpListener> =
        (0..args.nodes).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let ports: Vec<u16> =
        listeners.iter().map(|listener| listener.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
    drop(listeners);
    let members: Vec<(u64, String)> =
        ports.iter().enumerate().map(|(index, port)| (index as u64 + 1, format!("127.0.0.1:{port}"))).collect();
    let service = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut starting = Vec::new();
    for (id, address) in &members {
        let node_dir = dir.join(format!("node-{id}"));
        std::fs::create_dir_all(&node_dir)?;
        let node_key = ledger::node::load_or_create_key(&node_dir.join("node.key"))?.verifying_key().to_bytes();
        let peer_auth = confidential.then(|| {
            let validity = ledger::endorsements::period_from(
                domain::clock::wall_clock_now().0,
                ledger::endorsements::VALID_DAYS_DEFAULT,
            );
            ledger::node::PeerAuth {
                service_key: service.verifying_key().to_bytes(),
                endorsement: domain::receipt::endorse_for(&service, *id, &node_key, Some(validity)),
                validity: Some(validity),
            }
        });
        let config = ledger::node::NodeConfig {
            node_id: *id,
            data_dir: dir.join(format!("node-{id}")),
            listen: address.parse()?,
            raft_listen: None,
            bootstrap: false,
            init_members: members.clone(),
            admin_config: (*id == 1).then(|| dir.join("ledger.toml")),
            operator_key: (*id == 1).then(|| operator_key.clone()),
            clock: Clock::Real,
            snapshot_after_entries: ledger::limits::SNAPSHOT_AFTER_ENTRIES_DEFAULT,
            node_key: None,
            signature_interval: signatures.then_some(ledger::limits::SIGNATURE_INTERVAL_DEFAULT),
            peer_auth,
            measurement: None,
            seal: confidential,
            tls: confidential,
        };
        starting.push(tokio::spawn(ledger::node::start(config)));
    }
    let mut nodes = Vec::new();
    for handle in starting {
        nodes.push(handle.await??);
    }
    let leader = nodes[0].raft.current_leader().await.context("a leader")?;
    let leader_url = format!("{}://{}", nodes[0].scheme, members[leader as usize - 1].1);
    eprintln!(
        "{} nodes up (signatures {}, sealed, authenticated and TLS {}); leader is node {leader}; pre-signing readings...",
        args.nodes,
        if signatures { "on" } else { "off" },
        if confidential { "on" } else { "off" }
    );

    // Pre-signed load: distinct (meter, sequence) pairs, so every reading is accepted.
    let keys: Vec<_> = (0..meters).map(|meter| firmware_sim::meter_key(seed, meter)).collect();
    let needed: usize =
        args.batch_sizes.iter().map(|&batch| args.readings.max(batch * 200).div_ceil(batch) * batch).sum();
    let signed: Vec<SignedReading> = (0..needed)
        .map(|index| {
            let meter = (index % meters as usize) as u32;
            let sequence = (index / meters as usize) as u64 + 1;
            reading(meter, sequence).sign(&keys[meter as usize]).expect("valid")
        })
        .collect();
    let public: Vec<[u8; 32]> = keys.iter().map(|key| key.verifying_key().to_bytes()).collect();

    // Over TLS the load client trusts the service's nodes, as a gateway does.
    let trust = confidential.then(|| service.verifying_key().to_bytes());
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(args.concurrency);
    let http = match trust {
        None => builder.build()?,
        Some(key) => builder.use_preconfigured_tls(domain::tls::client_config(key, None)?).build()?,
    };
    let mut rows = Vec::new();
    let mut offset = 0usize;
    for &batch in &args.batch_sizes {
        let requests = args.readings.max(batch * 200).div_ceil(batch);
        let envelopes: Vec<Vec<Envelope>> = (0..requests)
            .map(|request| {
                signed[offset + request * batch..offset + (request + 1) * batch]
                    .iter()
                    .map(|s| s.to_envelope(false))
                    .collect()
            })
            .collect();
        let verify_sample: Vec<(SignedReading, [u8; 32])> = signed[offset..offset + (batch * 4).min(requests * batch)]
            .iter()
            .map(|s| {
                let meter = firmware_sim::meter_index(s.reading().meter_id.as_str()).expect("simulated id");
                (s.clone(), public[meter as usize])
            })
            .collect();
        offset += requests * batch;
        let queue = Arc::new(std::sync::Mutex::new(envelopes.into_iter().enumerate().collect::<Vec<_>>()));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let (queue, http, url) = (queue.clone(), http.clone(), leader_url.clone());
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let Some((_, readings)) = queue.lock().expect("queue lock").pop() else { break };
                    let request = SubmitReadings {
                        gateway_id: GatewayId::new("bench").expect("id"),
                        readings,
                        gateway_signature: None,
                    };
                    let sent = Instant::now();
                    let response: SubmitReadingsResponse = http
                        .post(format!("{url}/v1/readings"))
                        .json(&request)
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    latencies.push(sent.elapsed());
                    anyhow::ensure!(
                        response.outcomes.iter().all(|o| o.status == domain::api::OutcomeStatus::Accepted),
                        "a pre-signed reading was not accepted"
                    );
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let rate = (requests * batch) as f64 / elapsed;
        let bare = Duration::from_secs_f64(args.bare_seconds.max(0.01));
        let verify_rate =
            tokio::task::spawn_blocking(move || bare_batch_verify_per_second(&verify_sample, batch, bare)).await?;
        let rocks_dir = dir.join(format!("bare-rocksdb-{batch}"));
        let fsync_rate =
            tokio::task::spawn_blocking(move || bare_rocksdb_synced_puts_per_second(&rocks_dir, batch, bare)).await??;
        let row = format!(
            "| {} | {} | {batch} | {} | {requests} | {rate:.0} | {:.1} | {:.1} | {verify_rate:.0} | {fsync_rate:.0} | {:.2} | {:.2} |",
            if confidential { "on" } else { "off" },
            if signatures { "on" } else { "off" },
            requests * batch,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            rate / verify_rate,
            rate / fsync_rate,
        );
        eprintln!("{row}");
        rows.push(row);
    }
    for node in nodes {
        node.stop().await;
    }
    Ok(rows)
}
